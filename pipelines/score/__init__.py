"""Nightly batch scoring of the open leads (pipelines.score.run) and where the scores live (store)."""
