"""Did the scores come true: stored nightly runs judged against the outcomes the CRM now holds."""
