"""The typed view of `params.yaml`: one block per stage plus `base`, validated once at each entry point.

Unknown or missing keys fail loudly, naming the key, so a typo in `dvc exp run -S demo_crm.leeds=5` cannot
silently fall back to a default.
"""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path
from typing import Final, Literal

import sqlalchemy as sa
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipelines.errors import BadInputError, ParamsError


class StrictModel(BaseModel):
    """Base for every params block: no unknown keys, no mutation after loading."""

    model_config = ConfigDict(extra="forbid", frozen=True)


_PARAMS_HINT = (
    "keep credentials out of params.yaml: pass the URL with --url or the LEADSCORE_DB_URL environment "
    "variable, or use ~/.pgpass"
)


def check_url_has_no_password(url: str, hint: str = _PARAMS_HINT) -> str:
    """The URL unchanged, or an error if it embeds a password (credentials never live in files under git)."""
    try:
        parsed = sa.make_url(url)
    except (sa.exc.ArgumentError, ValueError) as exc:  # ValueError: a non-numeric port
        raise ValueError(f"not a SQLAlchemy database URL: {exc}") from None
    if parsed.password:
        raise ValueError(f"the database URL holds a password; {hint}")
    return url


class BaseParams(StrictModel):
    """Settings shared by all stages."""

    crm_url: str = Field(description="SQLAlchemy URL of the CRM database (no password)")
    seed: int = Field(description="Random seed for modelling stages")
    future_tolerance_minutes: int = Field(
        ge=0,
        le=10_080,
        description="Clock skew accepted: CRM events (extract) and --as-of (score) may lie this far "
        "past this machine's clock; later ones are refused",
    )

    _check_url = field_validator("crm_url")(check_url_has_no_password)


class DemoCrmParams(StrictModel):
    """Size, seed and time span of the synthetic CRM."""

    leads: int = Field(gt=0, description="Number of leads to generate")
    seed: int = Field(description="Seed: the same seed gives an identical database")
    end_date: date = Field(description="'Today' of the demo history (UTC midnight)")
    history_days: int = Field(ge=120, le=3650, description="Days of history before end_date")
    batch_leads: int = Field(
        default=250_000,
        gt=0,
        description="Leads generated at a time (each batch with its own accounts): bounds the generator's memory; "
        "a CRM of at most this many leads is one batch, the same whatever the value",
    )


#: The CRM's regions (`pipelines.crm.vocab.REGIONS`; a test keeps the two equal): a lead's region is always one of
#: them (its country's, else its account's), so an ICP naming another one would silently match no lead.
Region = Literal["NA", "EMEA", "APAC", "LATAM"]


class IcpParams(StrictModel):
    """The ideal customer profile: fit features flag a lead whose account matches each part."""

    industries: tuple[str, ...] = Field(min_length=1, description="Industries of the ideal customer")
    employees_min: int = Field(ge=0, description="Smallest ideal account size (employees, inclusive)")
    employees_max: int = Field(ge=0, description="Largest ideal account size (employees, inclusive)")
    regions: tuple[Region, ...] = Field(min_length=1, description="Regions of the ideal customer")

    @model_validator(mode="after")
    def _size_range(self) -> IcpParams:
        if self.employees_max < self.employees_min:
            raise ValueError("employees_max must be >= employees_min")
        return self


#: Current-value CRM fields that reps may fill in or edit while qualifying (pipelines/features/columns.py).
CurrentValueField = Literal[
    "budget_range", "purchase_timeframe", "industry", "employee_count", "annual_revenue", "account_location"
]


class FeaturesParams(StrictModel):
    """Snapshot grid, label definition and feature windows of the features stage."""

    target_stage: Literal["SAL", "SQL", "Won"] = Field(
        description="Stage the label asks about; reaching it or any later stage counts (SQL: SQL/Opportunity/Won/Lost)"
    )
    horizon_days: int = Field(gt=0, le=730, description="Label: target reached within this many days after t")
    cadence_days: int = Field(gt=0, le=365, description="Days between training snapshots (UTC midnights)")
    max_lead_age_days: int | None = Field(
        gt=0,
        description="Training rows only for leads at most this many days old at the snapshot; null: every "
        "open lead whatever its age (the population nightly scoring scores)",
    )
    old_lead_days: int = Field(
        gt=0, description="Leads older than this at a snapshot are long-open: their rows are sampled by lead"
    )
    old_lead_keep_one_in: int = Field(
        ge=1,
        description="Keep the long-open rows of 1 lead in N (a fixed hash of lead_id), each weighted N, so "
        "every figure describes the whole open population in whole open-lead weeks; 1: keep all",
    )
    sample_leads: int | None = Field(
        gt=0,
        description="Training rows for at most this many leads (a fixed pseudo-random sample); null: all. "
        "Bounds the features, train, calibrate and evaluate stages on big CRMs, not scoring",
    )
    windows_days: tuple[int, ...] = Field(min_length=1, description="Engagement count windows (days), plus all-time")
    velocity_days: int = Field(gt=0, description="Velocity: activity in the last N days vs the N days before")
    decay_half_life_days: tuple[float, ...] = Field(
        min_length=1,
        description="Half-lives (days) of the account's exponentially decayed intent and engagement counts",
    )
    chunk_leads: int = Field(gt=0, description="Leads per processing chunk (whole accounts kept together)")
    part_leads: int = Field(
        gt=0,
        description="Leads the features stage holds in memory at a time (whole chunks): a CRM with more is read "
        "part by part; bounds memory with chunk_leads, never results",
    )
    icp: IcpParams
    current_value_fields: tuple[CurrentValueField, ...] = Field(
        description="Current-value CRM fields used as features anyway (a leak risk: reps may fill them in while "
        "qualifying, so the value may encode the outcome); []: none, the leak-safe default"
    )

    @field_validator("current_value_fields")
    @classmethod
    def _distinct_fields(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError("current_value_fields lists a field twice")
        return value

    @field_validator("windows_days")
    @classmethod
    def _positive_sorted_windows(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(w <= 0 for w in value) or len(set(value)) != len(value):
            raise ValueError("windows_days must be distinct positive day counts")
        return tuple(sorted(value))

    @field_validator("decay_half_life_days")
    @classmethod
    def _positive_distinct_half_lives(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(h <= 0 for h in value) or len({f"{h:g}" for h in value}) != len(value):
            raise ValueError("decay_half_life_days must be distinct positive day counts")
        return tuple(sorted(value))


class TrainParams(StrictModel):
    """Out-of-time split, LightGBM hyper-parameters and the logistic-regression baseline of the train stage."""

    test_fraction: float = Field(gt=0, lt=0.5, description="Share of rows (latest snapshot dates) held out as test")
    calibration_fraction: float = Field(gt=0, lt=0.5, description="Share of rows before the test slice: calibration")
    min_positives: int = Field(ge=1, description="Refuse to train with fewer positive rows in the train slice")
    exclude_features: tuple[str, ...] = Field(description="Feature columns the models must not use")
    monotone_engagement: bool = Field(
        description="Monotone constraints from the declared business directions (pipelines/features/directions.py): "
        "+1 engagement counts and ideal-profile flags, -1 unsubscribes, bounces and bogus-lead signals"
    )
    learning_rate: float = Field(gt=0, le=1)
    num_leaves: int = Field(ge=2)
    min_child_samples: int = Field(ge=1)
    feature_fraction: float = Field(gt=0, le=1)
    bagging_fraction: float = Field(gt=0, le=1)
    bagging_freq: int = Field(ge=0)
    lambda_l2: float = Field(ge=0)
    cat_smooth: float = Field(ge=0)
    max_rounds: int = Field(ge=1, description="Upper bound on boosting rounds")
    min_rounds: int = Field(ge=1, description="Floor on the rounds chosen by cross-validation (never a stump)")
    early_stopping_rounds: int = Field(ge=1, description="Patience of early stopping inside each CV fold")
    cv_folds: int = Field(
        ge=2, le=10, description="Purged expanding-window CV folds over the train period that choose the rounds"
    )
    tune_trials: int = Field(ge=0, description="Optuna trials over the small search space (0: no tuning)")
    tune_timeout_seconds: float | None = Field(
        gt=0, description="Stop tuning after this many seconds (a safety cap: trials cut short are not reproducible)"
    )
    tune_sample_leads: int | None = Field(
        gt=0, description="Tune on the train-period rows of at most this many leads (a fixed hash sample); null: all"
    )
    tune_max_rounds: int = Field(ge=1, description="Upper bound on boosting rounds inside a tuning trial")
    tune_min_gain: float = Field(
        ge=0,
        lt=0.5,
        description="Keep the configured values unless the best trial's mean fold ROC-AUC beats theirs by this much "
        "(the search on a sample is noisy: a gain within the noise is not worth the change)",
    )
    num_threads: int = Field(ge=0, description="LightGBM threads (0: all cores)")
    logreg_c: float = Field(gt=0, description="Inverse L2 strength of the logistic-regression baseline")
    logreg_max_iter: int = Field(ge=10)

    @model_validator(mode="after")
    def _slices_leave_training_rows(self) -> TrainParams:
        if self.test_fraction + self.calibration_fraction >= 0.8:
            raise ValueError("test_fraction + calibration_fraction must leave at least 20% of rows for training")
        if self.min_rounds > self.max_rounds:
            raise ValueError("min_rounds must be <= max_rounds")
        return self


class StagePolicy(StrictModel):
    """How one stage's threshold on the calibrated probability is chosen."""

    policy: Literal["capacity", "precision", "match_rules"] = Field(
        description="capacity: N leads per week; precision: at least p of the picked reach the target; "
        "match_rules: as many as the rule MQLs"
    )
    leads_per_week: float | None = Field(default=None, gt=0, description="capacity: leads the team works a week")
    min_precision: float | None = Field(default=None, gt=0, lt=1, description="precision: share that must convert")

    @model_validator(mode="after")
    def _value_for_policy(self) -> StagePolicy:
        if self.policy == "capacity" and self.leads_per_week is None:
            raise ValueError("policy capacity needs leads_per_week")
        if self.policy == "precision" and self.min_precision is None:
            raise ValueError("policy precision needs min_precision")
        return self


class StageThresholds(StrictModel):
    """One policy per predicted stage, from the lowest (MQL) to the highest (SQL)."""

    MQL: StagePolicy
    SAL: StagePolicy
    SQL: StagePolicy


class CalibrateParams(StrictModel):
    """Probability calibration on the calibration slice and the per-stage thresholds chosen there."""

    method: Literal["isotonic", "platt"] = Field(description="isotonic regression or Platt (logistic) scaling")
    thresholds: StageThresholds
    volume: Literal["new", "standing"] = Field(
        description="what capacity and match_rules count: new = leads newly at or above the threshold at a snapshot "
        "(new hand-offs per week); standing = every open lead at or above it (the whole list)"
    )
    precision_min_rows: int = Field(
        ge=1, description="precision: the shortest list (lead-weeks on the calibration slice) whose precision counts"
    )
    segment_column: str | None = Field(
        description="Optional categorical feature (e.g. region) with its own thresholds, shrunk toward the global"
    )
    segment_k: float = Field(gt=0, description="Shrinkage: segment weight = positives / (positives + k)")
    bootstrap: int = Field(ge=0, description="Bootstrap resamples (of leads) for the confidence intervals")
    ci_level: float = Field(gt=0, lt=1)


class EvaluateParams(StrictModel):
    """Test-slice evaluation: calibration bins, lift deciles and bootstrap intervals."""

    ece_bins: int = Field(ge=2, description="Bins of the reliability curve and ECE")
    ece_strategy: Literal["quantile", "uniform"] = Field(description="quantile: equal-mass bins; uniform: equal-width")
    top_deciles: tuple[int, ...] = Field(min_length=1, description="Lift and capture in the top k deciles")
    bootstrap: int = Field(ge=0, description="Bootstrap resamples (of leads, not rows) for the headline figures")
    ci_level: float = Field(gt=0, lt=1)
    curve_points: int = Field(ge=10, description="Points kept per ROC/PR/gains curve in plots/")

    @field_validator("top_deciles")
    @classmethod
    def _deciles_in_range(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(not 1 <= d <= 10 for d in value):
            raise ValueError("top_deciles must lie in 1..10")
        return tuple(sorted(set(value)))


#: The name of `rules.file` (the history's rule) among the variants; no variant may take it.
HISTORY_RULE: Final = "history"


class RuleVariant(StrictModel):
    """A standard rule a marketer would configure instead of the history's: its own rules file, or the history's
    rule with every engagement rule decayed (`half_life_days`) and/or windowed (`within_days`).

    `threshold`: `own` = the file's threshold and gates decide the MQLs; `match_volume` = one threshold on the score,
    set so that the variant marks as many MQL lead-weeks as the history's rule on the calibration slice (its
    gates still apply). Derived variants change the point scale, so they default to `match_volume`.
    """

    file: Path | None = Field(default=None, description="A rules file of its own (docs/rules.md)")
    half_life_days: float | None = Field(default=None, gt=0, description="Decay every engagement rule of rules.file")
    within_days: float | None = Field(default=None, gt=0, description="Window every engagement rule of rules.file")
    threshold: Literal["own", "match_volume"] | None = Field(
        default=None,
        description="own: the file's threshold; match_volume: the history rule's MQL volume on the "
        "calibration slice (default: own for a file, match_volume for a derived variant)",
    )

    @model_validator(mode="after")
    def _one_source(self) -> RuleVariant:
        derived = self.half_life_days is not None or self.within_days is not None
        if (self.file is None) == (not derived):
            raise ValueError(
                "a rule variant is either a `file` or a transformation of rules.file "
                "(`half_life_days` and/or `within_days`), not both or neither"
            )
        return self

    @property
    def threshold_policy(self) -> Literal["own", "match_volume"]:
        """The threshold policy, its default filled in."""
        if self.threshold is not None:
            return self.threshold
        return "own" if self.file is not None else "match_volume"


class RulesParams(StrictModel):
    """The rule-based MQL baseline: which rules file to evaluate (format and keys: docs/rules.md), and the standard
    variants scored beside it on the same snapshots (the evaluate stage compares the model with the best of them)."""

    file: Path = Field(description="Rules file (YAML), relative to the working directory")
    variants: dict[str, RuleVariant] = Field(default_factory=dict, description="name -> variant (docs/rules.md)")

    @field_validator("variants")
    @classmethod
    def _names(cls, value: dict[str, RuleVariant]) -> dict[str, RuleVariant]:
        bad = [k for k in value if k == HISTORY_RULE or not re.fullmatch(r"[a-z][a-z0-9_]{0,39}", k)]
        if bad:
            raise ValueError(f"rule variant names must be lower-case identifiers other than {HISTORY_RULE!r}: {bad}")
        return value


class GateParams(StrictModel):
    """Promotion gate. Absolute (every version, the first included): beats the best baseline's test ROC-AUC, ECE at
    most `max_ece`, not constant and at least `min_rounds` rounds. Relative: a challenger replaces the champion only
    if it is not worse on the same test rows."""

    auc_margin: float = Field(ge=0, lt=0.5, description="Largest tolerated AUC loss vs the champion (lower CI bound)")
    max_ece: float = Field(gt=0, lt=1, description="The challenger's ECE on the test rows must not exceed this")
    max_ece_increase: float = Field(ge=0, lt=1, description="Largest tolerated ECE increase vs the champion")
    bootstrap: int = Field(ge=10, description="Paired bootstrap resamples (of leads) of the AUC difference")
    ci_level: float = Field(gt=0, lt=1, description="Two-sided level of the AUC-difference interval")
    baseline_auc_margin: float = Field(
        ge=0,
        lt=0.5,
        description="Absolute gate: the test ROC-AUC must exceed the best baseline's (logistic regression, best "
        "rule) by more than this",
    )
    min_rounds: int = Field(ge=1, description="Absolute gate: a model of fewer boosting rounds never becomes champion")


class RegisterParams(StrictModel):
    """MLflow tracking and model registry: names, reason codes per lead and the promotion gate."""

    model_name: str = Field(min_length=1, description="Registered model name; production loads models:/<name>@champion")
    experiment: str = Field(min_length=1, description="MLflow experiment of the training runs")
    top_reasons: int = Field(ge=0, le=10, description="Positive and negative reasons returned per lead")
    input_example_rows: int = Field(ge=1, le=20, description="Rows of the logged input example (feature columns only)")
    gate: GateParams


class ScoreTables(StrictModel):
    """Names of what nightly scoring writes; the scorer checks they are plain SQL identifiers before it starts."""

    scores: str = Field(description="History: one row per lead per run")
    runs: str = Field(description="One row per complete run: counts, timings, model, drift, status")
    latest: str = Field(description="View: the rows of the most recent complete run")

    @model_validator(mode="after")
    def _distinct(self) -> ScoreTables:
        if len({self.scores.lower(), self.runs.lower(), self.latest.lower()}) != 3:
            raise ValueError("scores, runs and latest must be three different names")
        return self


class ScoreParams(StrictModel):
    """Nightly batch scoring: chunk size, engine, output tables and the drift alarm."""

    model_uri: str = Field(min_length=1, description="Model to score with, e.g. models:/lead-scoring@champion")
    chunk_leads: int = Field(gt=0, description="Leads per chunk (whole accounts kept together): bounds memory")
    engine: Literal["pandas", "spark"] = Field(
        description="pandas: in process; spark: the whole run on Spark executors"
    )
    spark_master: str = Field(min_length=1, description="Spark master URL for --engine spark (local[N]: local mode)")
    spark_jars: tuple[str, ...] = Field(
        default=(),
        description="Jars put on Spark's classpath for --engine spark, e.g. the PostgreSQL JDBC driver it reads "
        "the CRM with when no --snapshot is given",
    )
    tables: ScoreTables
    drift_features: int = Field(ge=0, le=100, description="Most important features whose PSI is tracked per run")
    drift_bins: int = Field(ge=2, le=50, description="Quantile bins of the drift reference (numeric features)")
    psi_warning: float = Field(gt=0, description="Warn (status drift_warning) when any tracked PSI exceeds this")
    reasons_for: Literal["all", "flagged", "handed"] = Field(
        description="Reasons (SHAP, the costly part) for every lead (all), for predicted or rule MQLs (flagged), "
        "or only for leads handed to a team, i.e. with a predicted stage (handed); others: `leadscore explain`"
    )
    min_leads_ratio: float = Field(
        ge=0,
        le=1,
        description="Refuse a run (exit 2, unless --allow-shrink) whose leads read or scored are fewer "
        "than this share of the latest run's: an empty or truncated CRM load must not "
        "replace tonight's list",
    )


class LeakageParams(StrictModel):
    """When the report flags a campaign's or region's rule MQLs (MQL -> SQL conversion within the horizon)."""

    min_mqls: int = Field(ge=1, description="Rule MQL rows (lead-weeks) a group needs before it is flagged")
    too_loose_below: float = Field(ge=0, lt=1, description="MQL -> SQL below this: leakage too high (too loose)")
    too_narrow_above: float = Field(gt=0, le=1, description="MQL -> SQL above this: leakage too low (net too narrow)")

    @model_validator(mode="after")
    def _ordered(self) -> LeakageParams:
        if self.too_narrow_above <= self.too_loose_below:
            raise ValueError("too_narrow_above must be greater than too_loose_below")
        return self


class ReportParams(StrictModel):
    """The marketers' report (predicted vs rule MQLs): intervals, curve resolution, examples and leakage flags."""

    bootstrap: int = Field(ge=0, description="Resamples of whole accounts for the conversion intervals (0: none)")
    ci_level: float = Field(gt=0, lt=1, description="Level of the conversion intervals (the page's wording follows)")
    curve_points: int = Field(ge=10, le=2000, description="Points per lift, capture and trade-off curve")
    examples: int = Field(ge=1, le=50, description="Disagreement examples shown per side")
    leakage: LeakageParams
    plan_target_sql: float | None = Field(
        gt=0,
        description="SQLs per plan_per the page's plan is for; null: the SQL list's weekly capacity "
        "(calibrate.thresholds.SQL.leads_per_week) over plan_per",
    )
    plan_per: Literal["week", "month", "quarter"] = Field(description="The period of the page's plan target")


class BacktestParams(StrictModel):
    """`leadscore backtest`: stored nightly runs against the outcomes the CRM now holds (docs/backtest.md)."""

    table: str = Field(description="Table of one row per backtested run (a plain SQL identifier, quoted)")
    obs_exp_low: float = Field(gt=0, lt=1, description="Observed / expected conversions below this: flagged")
    obs_exp_high: float = Field(gt=1, description="Observed / expected conversions above this: flagged")
    min_roc_auc: float = Field(
        gt=0.5, lt=1, description="A flagged run with ROC-AUC below this needs a retrain, else a recalibration"
    )
    bootstrap: int = Field(ge=0, description="Resamples of accounts for the intervals (0: none)")
    ci_level: float = Field(gt=0, lt=1)


class PlanParams(StrictModel):
    """`leadscore plan`: new leads and MQLs per campaign for a sales target (docs/backtest.md)."""

    recent_days: int = Field(
        gt=0, le=365, description="A campaign's recent leads: created this many days before the latest run"
    )
    history_days: int = Field(
        gt=0, le=3650, description="Funnel rates from the campaign's leads created this many days before the run"
    )
    bootstrap: int = Field(ge=0, description="Resamples of accounts for the intervals (0: none)")
    ci_level: float = Field(gt=0, lt=1)


class MappingParams(StrictModel):
    """Bring your own CRM: the column mapping `leadscore import` reads (format: docs/mapping.md)."""

    file: Path | None = Field(description="Mapping YAML (e.g. config/mappings/x_education.yaml); null: the demo CRM")


class Params(StrictModel):
    """All of params.yaml."""

    base: BaseParams
    demo_crm: DemoCrmParams
    features: FeaturesParams
    rules: RulesParams
    train: TrainParams
    calibrate: CalibrateParams
    evaluate: EvaluateParams
    registry: RegisterParams = Field(alias="register")  # `register` would shadow pydantic's ABC classmethod
    score: ScoreParams
    report: ReportParams
    backtest: BacktestParams
    plan: PlanParams
    mapping: MappingParams

    @model_validator(mode="after")
    def _plan_target_known(self) -> Params:
        if self.report.plan_target_sql is None and self.calibrate.thresholds.SQL.policy != "capacity":
            raise ValueError(
                "report.plan_target_sql: null means the SQL list's weekly capacity, but calibrate.thresholds.SQL "
                f"has policy {self.calibrate.thresholds.SQL.policy}; set a number of SQLs"
            )
        return self


def format_validation_errors(
    path: Path, exc: ValidationError, what: str = "", unknown: str = "unknown key", key_word: str = ""
) -> str:
    """One line per bad key of a YAML file checked by pydantic: `<path>: N problem(s)<what>`, then
    `  <key_word><dotted.key>: <message>`, with `unknown` for keys the typed model does not have."""
    lines = [f"{path}: {exc.error_count()} problem(s){what}"]
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        message = unknown if err["type"] == "extra_forbidden" else err["msg"]
        lines.append(f"  {key_word}{where}: {message}")
    return "\n".join(lines)


def read_yaml(path: Path, what: str, error: type[BadInputError] = ParamsError) -> object:
    """The parsed YAML at `path`; `error` says clearly when the file is missing or is not YAML."""
    try:
        return yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise error(f"{what} {path} not found") from None
    except yaml.YAMLError as exc:
        raise error(f"{path} is not valid YAML: {exc}") from None


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml; ParamsError names every bad key."""
    path = Path(path)
    raw = read_yaml(path, "params file")
    if not isinstance(raw, dict):
        raise ParamsError(f"{path} must hold a mapping of blocks, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise ParamsError(
            format_validation_errors(path, exc, unknown="unknown key (not in the typed params)")
        ) from None
