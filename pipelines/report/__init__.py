"""The marketers' report: predicted MQLs beside the rule-based MQLs marketers know, as one self-contained HTML page.

- `core`: the pure core (frames and typed params in, tables out): the 2x2 with conversion intervals, lift and
  capture, the threshold trade-off, leakage per campaign and region with flags, disagreement examples, grade and
  fit-vs-readiness mix, for the out-of-time test slice and for the latest nightly run;
- `render`: inline-SVG charts and HTML tables (no external asset);
- `nightly`: reads the latest scoring run (docs/scoring.md) and joins lead attributes from the CRM;
- `stage`: the entry point of `leadscore report` (DVC stage `report` -> reports/mql_comparison.html).
"""
