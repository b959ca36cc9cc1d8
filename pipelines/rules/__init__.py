"""Rule-based MQL scoring as configuration: the points rules marketers use today, evaluated point-in-time.

A rules file (YAML, format in docs/rules.md) gives *fit* rules (points once when a condition on the lead holds),
*engagement* rules (points per activity, optionally only within a window of days or decayed by a half-life),
optional *gates* (conditions that must all hold for an MQL, e.g. "ideal company + target role + confirmed problem
+ willing to meet") and an MQL threshold, with overrides per region and per campaign (campaign > region >
default, key by key). `evaluate_rules` scores every (lead_id, snapshot_at) of a snapshot frame counting only
activities known at snapshot_at, and says which rules fired, so the rules are the baseline every prediction is
compared with on the very same rows.

One job per module:
- `schema`: the rules file's model and its validation (pure);
- `attributes`: the lead fields conditions test, and the overrides resolved per lead (pure);
- `counting`: as-of activity counts and decayed sums on the features' clock, `pipelines.features.timeline` (pure);
- `evaluation`: scoring snapshot rows, the fired rules in words, the first moment of MQL; `rule_flags` the score
  and flag alone, for nightly scoring (pure);
- `variants`: the standard decayed / windowed / four-part baselines (pure);
- `io`: reading rules files, the raw tables and snapshot keys; writing the scores.

The names below are the package's interface (the CLI, scoring, evaluate, notebooks and tests import them from here).
"""

from pipelines.rules.attributes import attribute_columns, lead_attributes
from pipelines.rules.evaluation import FLAG_COLUMNS, INPUT_TABLES, OUTPUT_COLUMNS, evaluate_rules, rule_flags
from pipelines.rules.io import RAW_COLUMNS, load_rules, load_variants, read_raw_tables, read_snapshot_keys, write_scores
from pipelines.rules.schema import (
    ATTRIBUTE_PREFIX,
    FIELDS,
    ICP_KEYS,
    ActivityCondition,
    AllOf,
    AnyOf,
    Condition,
    EngagementRule,
    FieldCondition,
    FieldSpec,
    FitRule,
    Gate,
    Not,
    Override,
    Overrides,
    RulesError,
    RuleSet,
    check_rules_against_crm,
    field_spec,
    parse_rules,
)
from pipelines.rules.variants import VARIANT_SUFFIXES, derive_rules, score_variants

__all__ = [
    "ATTRIBUTE_PREFIX",
    "FIELDS",
    "FLAG_COLUMNS",
    "ICP_KEYS",
    "INPUT_TABLES",
    "OUTPUT_COLUMNS",
    "RAW_COLUMNS",
    "VARIANT_SUFFIXES",
    "ActivityCondition",
    "AllOf",
    "AnyOf",
    "Condition",
    "EngagementRule",
    "FieldCondition",
    "FieldSpec",
    "FitRule",
    "Gate",
    "Not",
    "Override",
    "Overrides",
    "RuleSet",
    "RulesError",
    "attribute_columns",
    "check_rules_against_crm",
    "derive_rules",
    "evaluate_rules",
    "field_spec",
    "lead_attributes",
    "load_rules",
    "load_variants",
    "parse_rules",
    "read_raw_tables",
    "read_snapshot_keys",
    "rule_flags",
    "score_variants",
    "write_scores",
]
