"""The marketers' report: predicted MQLs beside the rule-based MQLs marketers know, as one self-contained HTML page.

- `core`: the pure core (frames and typed params in, tables out): the 2x2 with conversion intervals, lift and
  capture, the threshold trade-off, leakage per campaign and region with flags, disagreement examples, grade and
  fit-vs-readiness mix, for the out-of-time test slice and for the latest nightly run;
- `headline`: the answer first (the model vs the best standard rule at equal volume, with its interval) and the
  standard-rule table, read from the evaluate stage's metrics (pure: the parsed JSON in);
- `charts`: the inline-SVG charts (matplotlib, no URL, the same bytes on every run);
- `render`: display rows and words from params for the Jinja2 templates in `templates/` (autoescape on);
- `nightly`: reads the latest scoring run (docs/scoring.md) and joins lead attributes from the CRM;
- `stage`: the entry point of `leadscore report` (DVC stage `report` -> reports/mql_comparison.html).
"""
