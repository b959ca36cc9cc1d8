"""Helpers several test tiers share (a tiny registered model, local servers); imported as `tests.support.*`."""
