"""Column mapping: a user's own CRM export (CSV, Parquet or SQL tables) turned into the five CRM tables.

A YAML mapping file (format: docs/mapping.md) says, per CRM table, where its rows come from and how the source
columns become the contract's columns: renames, value maps (e.g. the user's source names onto
`vocab.LEAD_SOURCES`), date formats, constants, text meaning "not answered", columns dropped as leaky (each with
its reason) or ignored (each with its reason), and lead attributes passed through as extra features. Every source
column must be accounted for, so nothing silently becomes a feature and nothing silently disappears.

A leads-only dataset (no activities, no stage history, no timestamps) names a `target` column instead of a
stage history: every lead is created at `snapshot_date` and a positive lead enters `target.stage` one day later,
so the features stage sees a single snapshot (and the train stage splits it stratified at random, not by time).

`apply_mapping` is the pure core (raw frames + a `CrmMapping` in, validated CRM frames out);
`load_mapping`, `read_sources` and `write_mapped` do the I/O.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipelines.config import check_url_has_no_password, format_validation_errors
from pipelines.crm.attributes import (
    ATTRIBUTES_KEY,
    ATTRIBUTES_TABLE,
    CRM_IDS_TABLE,
    IMPORT_TABLE,
    canonical_attributes,
)
from pipelines.crm.db import check_identifier
from pipelines.crm.schema import PERSONAL_COLUMNS, PRIMARY_KEYS, SCHEMAS, TABLES, TIMESTAMP_COLUMNS, validate_crm
from pipelines.errors import BadInputError

log = logging.getLogger(__name__)

_MAX_EXAMPLES: Final = 5
_ENV: Final = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
#: Leads-only data: a positive lead enters the target stage this long after the single snapshot.
TARGET_DELAY: Final = pd.Timedelta(days=1)
LABEL_STAGE_HISTORY: Final = "stage_history"
LABEL_LEADS_ONLY: Final = "leads_only"
LABEL_DATED_FLAG: Final = "dated_flag"
#: Id columns per CRM table (its own key and its references), text in `ids: text` mappings.
ID_COLUMNS: Final[dict[str, tuple[str, ...]]] = {
    "campaigns": ("campaign_id",),
    "accounts": ("account_id",),
    "leads": ("lead_id", "account_id", "campaign_id"),
    "activities": ("activity_id", "lead_id"),
    "stage_history": ("stage_history_id", "lead_id"),
}
_ISO: Final = re.compile(r"^\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}:?\d{2})?$")
_DAY_MONTH: Final = re.compile(r"^(\d{1,2})([/.-])(\d{1,2})\2(\d{4})(?:[ T]\d{1,2}:\d{2}(?::\d{2})?)?$")


class MappingError(BadInputError):
    """The mapping file or the data it maps is unusable; the message names file, table, column and rows."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_no_inline_password(url: str) -> None:
    """A password may reach a source URL only through ${ENV}: the mapping file lives in git like params.yaml."""
    try:
        check_url_has_no_password(
            url,
            hint="keep credentials out of mapping files: write the password as ${ENV} "
            "(e.g. postgresql://user:${CRM_PASSWORD}@host/db), or use ~/.pgpass",
        )
    except ValueError as exc:
        import sqlalchemy as sa

        if "holds a password" not in str(exc):
            if _ENV.search(url):
                return  # ${...} in the host, port or whole URL: checked once expanded, at read time
            raise
        if _ENV.fullmatch(sa.make_url(url).password or ""):
            return
        raise


class Source(_Strict):
    """Where a table's rows come from: a CSV or Parquet file, or a table of a SQLAlchemy database."""

    path: str | None = Field(default=None, description="CSV or Parquet file; ${ENV} and ${ENV:-default} expand")
    format: Literal["csv", "parquet"] | None = Field(default=None, description="default: from the file suffix")
    sep: str = Field(default=",", min_length=1, description="CSV field separator")
    encoding: str = Field(default="utf-8", description="CSV text encoding")
    url: str | None = Field(default=None, description="SQLAlchemy URL (passwords through ${ENV}, never inline)")
    table: str | None = Field(default=None, description="Table name in the database at `url`")

    @model_validator(mode="after")
    def _one_kind(self) -> Source:
        if (self.path is None) == (self.url is None):
            raise ValueError("give exactly one of path (a CSV or Parquet file) or url + table (a SQL table)")
        if self.url is not None:
            if self.table is None:
                raise ValueError("a SQL source needs `table`")
            check_identifier(self.table)
            _check_no_inline_password(self.url)
        return self


class ValueMap(_Strict):
    """Source values onto the contract's spellings; values not listed are an error unless `other` is given."""

    map: dict[str, str | None] = Field(default_factory=dict, description="source value -> CRM value (null: missing)")
    other: str | None = Field(default=None, description="CRM value for every other (non-missing) source value")
    missing: str | None = Field(default=None, description="CRM value for missing source values (default: missing)")

    @field_validator("map", mode="before")
    @classmethod
    def _keys_as_text(cls, value: object) -> object:
        return {str(k): v for k, v in value.items()} if isinstance(value, dict) else value


class Attribute(_Strict):
    """A source column passed through as an extra lead feature."""

    column: str = Field(min_length=1, description="Source column")
    kind: Literal["numeric", "categorical"]


#: Date parts a `derived` attribute can take from a mapped timestamp (UTC).
DATE_PARTS: Final[tuple[str, ...]] = ("weekday", "month", "hour", "day_of_month", "quarter")


class Derived(_Strict):
    """A lead attribute computed from a mapped leads timestamp: its weekday, month, hour, ... (UTC)."""

    column: Literal["created_at"] = Field(description="The CRM timestamp column it is taken from")
    part: Literal["weekday", "month", "hour", "day_of_month", "quarter"]


class Unpivot(_Strict):
    """Wide date columns as rows: one row per (record, filled column), e.g. HubSpot's lifecycle-stage dates
    (`hs_lifecyclestage_marketingqualifiedlead_date`, ...) as stage entries. Empty cells give no row."""

    keep: list[str] = Field(min_length=1, description="Columns copied onto every row (e.g. the record id)")
    columns: dict[str, str] = Field(min_length=1, description="wide column -> the value it stands for")
    name: str = Field(min_length=1, description="New column holding that value (e.g. lifecycle_stage)")
    value: str = Field(min_length=1, description="New column holding the cell (e.g. entered)")


class Join(_Strict):
    """Columns of a second source brought onto this table's rows by key (a label, a stage event, an account field).

    The joined source must hold each key at most once (else the join is ambiguous and refused); rows without a
    match get missing values. The brought columns are source columns of this table like any other: map, pass
    through, drop or ignore each of them.
    """

    source: Source
    by: dict[str, str] = Field(min_length=1, max_length=1, description="this table's column -> the joined key")
    take: list[str] = Field(min_length=1, description="Columns of the joined source added to this table")
    prefix: str = Field(default="", description="Prepended to the brought columns' names (to avoid clashes)")


class TableMapping(_Strict):
    """How one CRM table is read and mapped."""

    source: Source
    columns: dict[str, str] = Field(description="source column -> CRM column")
    values: dict[str, ValueMap] = Field(default_factory=dict, description="CRM column -> value map")
    dates: dict[str, str] = Field(default_factory=dict, description="CRM column -> strptime format of the source")
    constants: dict[str, Any] = Field(default_factory=dict, description="CRM column -> one value for every row")
    missing_values: list[str] = Field(default_factory=list, description="Source text meaning 'not answered'")
    attributes: dict[str, Attribute] = Field(default_factory=dict, description="Extra features (leads only)")
    derived: dict[str, Derived] = Field(default_factory=dict, description="Date-part features (leads only)")
    joins: list[Join] = Field(default_factory=list, description="Columns of other sources brought in by key")
    unpivot: Unpivot | None = Field(default=None, description="Wide columns turned into rows (before the rest)")
    keep_rows: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Source column -> the values whose rows are kept (e.g. LeadHistory's "
        "Field: [Status]); every other row is left out",
    )

    @field_validator("keep_rows", mode="before")
    @classmethod
    def _kept_as_text(cls, value: object) -> object:
        if isinstance(value, dict):
            return {k: [str(x) for x in v] if isinstance(v, list) else v for k, v in value.items()}
        return value

    leaky: dict[str, str] = Field(default_factory=dict, description="Source column -> why it leaks the outcome")
    ignore: dict[str, str] = Field(default_factory=dict, description="Source column -> why it is not used")
    unmapped: Literal["error", "ignore"] = Field(
        default="error", description="Source columns the mapping does not name: error (default) or ignore"
    )

    @field_validator("leaky", "ignore")
    @classmethod
    def _reasons_given(cls, value: dict[str, str]) -> dict[str, str]:
        empty = [col for col, reason in value.items() if not isinstance(reason, str) or len(reason.strip()) < 3]
        if empty:
            raise ValueError(f"every dropped column needs a reason (a sentence); missing for {empty}")
        return value


class Target(_Strict):
    """A leads column that says whether a lead reached the target stage, without saying when.

    Every value must be in `positive` or `negative`: anything else (`yes` beside `1`/`0`, `TRUE`, `2`) is refused
    rather than guessed. With `created_at` mapped the data is dated: `maturation_days` declares how long after
    creation a lead's outcome is known, and leads younger than that at `snapshot_date` (the export date) are left
    out of training as censored.
    """

    column: str = Field(min_length=1, description="Source column of the leads table")
    positive: list[str] = Field(min_length=1, description="Values meaning 'reached the target stage'")
    negative: list[str] = Field(min_length=1, description="Values meaning 'did not (yet) reach it'")
    stage: Literal["SAL", "SQL", "Opportunity", "Won"] = Field(description="The CRM stage a positive value means")
    maturation_days: int | None = Field(
        default=None, gt=0, le=3650, description="Dated data: days after creation by which the outcome is known"
    )

    @field_validator("positive", "negative", mode="before")
    @classmethod
    def _as_text(cls, value: object) -> object:
        return [str(v) for v in value] if isinstance(value, list) else value

    @model_validator(mode="after")
    def _disjoint(self) -> Target:
        both = sorted(set(self.positive) & set(self.negative))
        if both:
            raise ValueError(f"value(s) {both} are both positive and negative")
        return self


class Order(_Strict):
    """Rows ordered in time without dates (a target column, no created_at): the order makes an out-of-time split.

    `column` is a numeric source column of the leads table that rises with time (null: the file's row order); ties
    are refused, since they leave the order ambiguous.
    """

    column: str | None = Field(default=None, description="Numeric leads column rising with time; null: row order")


class CrmMapping(_Strict):
    """A whole mapping file."""

    description: str | None = None
    snapshot_date: date | None = Field(
        default=None, description="With a target column: the export date (leads-only data: the one snapshot, UTC)"
    )
    target: Target | None = None
    order: Order | None = Field(default=None, description="Leads ordered in time without dates (with a target)")
    ids: Literal["integer", "text"] = Field(
        default="integer",
        description="integer: ids are whole numbers; text: any string id (Salesforce, hex, ...) "
        "kept as crm_id, the integer key derived from it",
    )
    tables: dict[Literal["campaigns", "accounts", "leads", "activities", "stage_history"], TableMapping]

    @model_validator(mode="after")
    def _consistent(self) -> CrmMapping:
        if "leads" not in self.tables:
            raise ValueError("tables.leads is required")
        problems = []
        for name, table in self.tables.items():
            schema_columns = set(SCHEMAS[name].columns)
            targets = list(table.columns.values())
            for column in [*targets, *table.values, *table.dates, *table.constants]:
                if column not in schema_columns:
                    problems.append(
                        f"tables.{name}: '{column}' is not a column of the CRM table {name} "
                        f"(expected one of {sorted(schema_columns)})"
                    )
            doubled = sorted({c for c in targets if targets.count(c) > 1} | (set(targets) & set(table.constants)))
            if doubled:
                problems.append(f"tables.{name}: CRM column(s) {doubled} are filled more than once")
            for column in table.values:
                if column not in targets:
                    problems.append(f"tables.{name}.values.{column}: no source column is mapped onto '{column}'")
            for column in table.dates:
                if column not in targets:
                    problems.append(f"tables.{name}.dates.{column}: no source column is mapped onto '{column}'")
            if (table.attributes or table.derived) and name != "leads":
                problems.append(f"tables.{name}.attributes: only the leads table can pass attributes through")
            for attr, spec in table.derived.items():
                if attr in table.attributes:
                    problems.append(f"tables.{name}.derived.{attr}: also an attribute")
                if spec.column not in targets:
                    problems.append(f"tables.{name}.derived.{attr}: no source column is mapped onto '{spec.column}'")
            personal = set(PERSONAL_COLUMNS.get("leads", ())) | {"job_title"}
            for attr in [*table.attributes, *table.derived]:
                try:
                    check_identifier(attr, "attribute")
                except ValueError as exc:
                    problems.append(f"tables.{name}.attributes.{attr}: {exc}")
                if attr in personal or attr == ATTRIBUTES_KEY or attr in schema_columns:
                    problems.append(f"tables.{name}.attributes.{attr}: the name clashes with a CRM column")
            used = set(table.columns) | {a.column for a in table.attributes.values()}
            if self.target is not None and name == "leads":
                used.add(self.target.column)
            for kind, dropped in (("leaky", table.leaky), ("ignore", table.ignore)):
                clash = sorted(used & set(dropped))
                if clash:
                    problems.append(f"tables.{name}.{kind}: column(s) {clash} are dropped and used at the same time")
            both = sorted(set(table.leaky) & set(table.ignore))
            if both:
                problems.append(f"tables.{name}: column(s) {both} are both leaky and ignored")
        if self.target is not None:
            if "stage_history" in self.tables:
                problems.append("target: give either a target column (leads-only data) or a stage_history table")
            dated = "created_at" in self.tables["leads"].columns.values()
            if dated and self.target.maturation_days is None:
                problems.append(
                    "target.maturation_days is required when created_at is mapped beside a target column "
                    "(dated data without conversion dates): how many days after creation is a lead's "
                    "outcome known? Younger leads are left out of training as censored"
                )
            if self.order is not None and dated:
                problems.append("order: the leads have dates (created_at is mapped); order is for data without dates")
            if not dated and self.target.maturation_days is not None:
                problems.append(
                    "target.maturation_days needs created_at mapped (dated data); leads-only data has one snapshot"
                )
            if self.snapshot_date is None:
                problems.append(
                    "snapshot_date is required with a target column (the export date; for leads-only "
                    "data, the one snapshot)"
                )
            if "activities" in self.tables and not dated:
                problems.append("target: leads-only data (a target column) cannot have activities without dates")
        elif "stage_history" not in self.tables:
            problems.append("no labels: map a stage_history table, or give a target column (leads-only data)")
        if self.order is not None and self.target is None:
            problems.append("order needs a target column (rows ordered in time with a flag)")
        if problems:
            raise ValueError("; ".join(problems))
        return self


@dataclass(frozen=True)
class MappedCrm:
    """The mapped CRM: the five validated tables, the lead attributes, the CRM's own lead ids and what was done.

    `crm_ids` (lead_id, crm_id) keeps the source's own lead key as text, so scores can go back to the CRM;
    `label` says how labels were made (`IMPORT_TABLE`: the features stage reads it from the snapshot).
    """

    tables: dict[str, pd.DataFrame]
    attributes: pd.DataFrame
    leads_only: bool
    report: dict[str, Any] = field(default_factory=dict)
    crm_ids: pd.DataFrame | None = None
    label: dict[str, Any] = field(default_factory=dict)

    @property
    def dated_flag(self) -> bool:
        """Dates plus a won flag without conversion dates: one row per lead at creation, an out-of-time split."""
        return self.label.get("label") == LABEL_DATED_FLAG


# ----------------------------------------------------------------------------------------------------------------
# Reading the mapping file and the sources
# ----------------------------------------------------------------------------------------------------------------


def parse_mapping(raw: object, path: Path) -> CrmMapping:
    """The typed mapping from parsed YAML; MappingError names the file and every bad key."""
    if not isinstance(raw, dict):
        raise MappingError(f"{path} must hold a mapping with a `tables` key, got {type(raw).__name__}")
    try:
        return CrmMapping.model_validate(raw)
    except ValidationError as exc:
        raise MappingError(format_validation_errors(path, exc, " in the mapping file", key_word="key ")) from None


def load_mapping(path: str | Path) -> CrmMapping:
    """Read and validate a mapping file (docs/mapping.md)."""
    from pipelines.config import read_yaml

    path = Path(path)
    return parse_mapping(read_yaml(path, "mapping file", MappingError), path)


def expand_env(text: str, where: str) -> str:
    """`${NAME}` and `${NAME:-default}` replaced from the environment; an unset name without default is an error."""

    def value(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is None:
            raise MappingError(f"{where}: environment variable {name} is not set (and no ${{{name}:-default}})")
        return default

    return _ENV.sub(value, text)


def read_source(source: Source, where: str) -> pd.DataFrame:
    """The raw rows of one source. CSV cells are read as text (empty cells missing) so value maps see them as typed."""
    if source.url is not None:
        from pipelines.crm.db import make_engine, read_table

        engine = make_engine(expand_env(source.url, where))
        try:
            return read_table(engine, source.table or "")
        finally:
            engine.dispose()
    path = Path(expand_env(source.path or "", where))
    kind = source.format or ("parquet" if path.suffix.lower() in (".parquet", ".pq") else "csv")
    if not path.exists():
        raise MappingError(f"{where}: source file {path} not found")
    if kind == "parquet":
        return pd.read_parquet(path)
    try:
        return pd.read_csv(
            path, sep=source.sep, encoding=source.encoding, dtype=str, keep_default_na=False, na_values=[""]
        )
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise MappingError(f"{where}: cannot read {path} as CSV: {exc}") from None


def join_key(name: str, index: int) -> str:
    """The key of a joined source's raw frame in the frames `apply_mapping` takes."""
    return f"{name}.joins.{index}"


def read_sources(mapping: CrmMapping) -> dict[str, pd.DataFrame]:
    """The raw rows of every mapped table and of every joined source."""
    raw: dict[str, pd.DataFrame] = {
        name: read_source(table.source, f"tables.{name}.source") for name, table in mapping.tables.items()
    }
    for name, table in mapping.tables.items():
        for i, join in enumerate(table.joins):
            raw[join_key(name, i)] = read_source(join.source, f"tables.{name}.joins[{i}].source")
    return raw


# ----------------------------------------------------------------------------------------------------------------
# The pure core
# ----------------------------------------------------------------------------------------------------------------


def _examples(values: pd.Series, mask: pd.Series | np.ndarray) -> str:
    """'row 3: 'x', row 7: 'y'' for the first rows where `mask` holds (row = 1-based data row of the source)."""
    rows = np.flatnonzero(np.asarray(mask))[:_MAX_EXAMPLES]
    return ", ".join(f"row {r + 1}: {values.iloc[r]!r}" for r in rows)


def _check_columns(
    name: str, frame: pd.DataFrame, table: TableMapping, target: Target | None, order: str | None = None
) -> None:
    named = {
        **{c: "keep_rows" for c in table.keep_rows},
        **{c: "columns" for c in table.columns},
        **{a.column: "attributes" for a in table.attributes.values()},
        **{c: "leaky" for c in table.leaky},
        **{c: "ignore" for c in table.ignore},
    }
    if target is not None and name == "leads":
        named[target.column] = "target"
    if order is not None and name == "leads":
        named[order] = "order"
    absent = [f"'{c}' (named in {where})" for c, where in named.items() if c not in frame.columns]
    if absent:
        raise MappingError(
            f"table '{name}': source column(s) {', '.join(absent)} not found; the source has {list(frame.columns)}"
        )
    unaccounted = [c for c in frame.columns if c not in named]
    if unaccounted and table.unmapped == "error":
        raise MappingError(
            f"table '{name}': source column(s) {unaccounted} are not in the mapping; map them (columns, attributes), "
            "drop them with a reason (leaky, ignore) or set `unmapped: ignore`"
        )
    if unaccounted:
        log.info("table %s: ignoring unmapped source column(s) %s", name, unaccounted)


def _blank(frame: pd.DataFrame, missing_values: list[str]) -> pd.DataFrame:
    """Text cells equal (after trimming) to a 'not answered' marker, or empty, become missing."""
    out = frame.copy()
    markers = {m.strip() for m in missing_values} | {""}
    for column in out.columns:
        if out[column].dtype == object or pd.api.types.is_string_dtype(out[column].dtype):
            text = out[column].astype("string").str.strip()
            out[column] = out[column].where(~text.isin(markers).fillna(False).astype(bool), None)
    return out


def _as_text(values: pd.Series) -> pd.Series:
    """Values as trimmed text for value maps: 1.0 reads as '1', so CSV text and typed Parquet agree."""
    if pd.api.types.is_float_dtype(values.dtype):
        whole = values.notna() & (values == np.floor(values.fillna(0)))
        text = values.astype("string")
        return text.where(~whole, values.where(whole).astype("Int64").astype("string"))
    return values.astype("string").str.strip()


def _map_values(name: str, crm: str, source: str, values: pd.Series, rule: ValueMap) -> pd.Series:
    text = _as_text(values)
    mapped = text.map(rule.map)
    unknown = (text.notna() & ~text.isin(list(rule.map))).fillna(False).astype(bool)
    if unknown.any():
        if rule.other is None:
            distinct = sorted(text[unknown].unique().tolist())[:20]
            raise MappingError(
                f"table '{name}', column '{crm}' (source '{source}'): {int(unknown.sum())} row(s) hold values the "
                f"value map does not list: {distinct}; e.g. {_examples(text, unknown)}; add them to "
                f"values.{crm}.map or give values.{crm}.other"
            )
        mapped = mapped.where(~unknown, rule.other)
    if rule.missing is not None:
        mapped = mapped.where(text.notna(), rule.missing)
    return mapped.astype(object).where(mapped.notna(), None)


def _parse_dates(name: str, crm: str, source: str, values: pd.Series, fmt: str) -> pd.Series:
    text = values.astype("string").str.strip()
    parsed = pd.to_datetime(text, format=fmt, errors="coerce", utc=True)
    bad = text.notna() & parsed.isna()
    if bad.any():
        raise MappingError(
            f"table '{name}', column '{crm}' (source '{source}'): {int(bad.sum())} value(s) do not "
            f"match the date format {fmt!r}; e.g. {_examples(text, bad)}"
        )
    return parsed


def _numeric(name: str, attr: str, source: str, values: pd.Series) -> pd.Series:
    numbers = pd.to_numeric(values, errors="coerce")
    bad = values.notna() & numbers.isna()
    if bad.any():
        raise MappingError(
            f"table '{name}', attribute '{attr}' (source '{source}'): {int(bad.sum())} value(s) are "
            f"not numbers; e.g. {_examples(values, bad)}; declare it categorical or fix the data"
        )
    return numbers.astype("float64")


def unpivot_source(name: str, frame: pd.DataFrame, spec: Unpivot) -> pd.DataFrame:
    """One row per record and filled wide column: the `keep` columns, `name` (the column's value), `value`."""
    absent = [c for c in [*spec.keep, *spec.columns] if c not in frame.columns]
    if absent:
        raise MappingError(
            f"table '{name}', unpivot: column(s) {absent} not found; the source has {list(frame.columns)}"
        )
    parts = []
    for column, meaning in spec.columns.items():
        filled = frame[column].notna() & (frame[column].astype("string").str.strip() != "").fillna(False)
        part = frame.loc[filled, list(spec.keep)].copy()
        part[spec.name] = meaning
        part[spec.value] = frame.loc[filled, column].to_numpy()
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def join_source(name: str, frame: pd.DataFrame, join: Join, other: pd.DataFrame, index: int) -> pd.DataFrame:
    """`frame` with `join.take` columns of `other` matched on the key; a key held twice in `other` is refused."""
    where = f"table '{name}', joins[{index}]"
    ((left, right),) = join.by.items()
    if left not in frame.columns:
        raise MappingError(f"{where}: column '{left}' not found in the table's source; it has {list(frame.columns)}")
    absent = [c for c in [right, *join.take] if c not in other.columns]
    if absent:
        raise MappingError(f"{where}: column(s) {absent} not found in the joined source; it has {list(other.columns)}")
    names = {c: f"{join.prefix}{c}" for c in join.take}
    clash = sorted(set(names.values()) & set(frame.columns))
    if clash:
        raise MappingError(f"{where}: brought column(s) {clash} already exist in the table's source; set `prefix`")
    keys = _as_text(other[right].reset_index(drop=True))
    doubled = keys.notna() & keys.duplicated(keep=False)
    if doubled.any():
        raise MappingError(
            f"{where}: the joined source holds {int(keys[doubled].nunique())} key(s) of column "
            f"'{right}' more than once, so the join is ambiguous; e.g. {_examples(keys, doubled)}; "
            "filter the source to one row per key"
        )
    looked_up = other.reset_index(drop=True).assign(_key=keys.to_numpy()).dropna(subset=["_key"])
    looked_up = looked_up.set_index("_key")[list(join.take)].rename(columns=names)
    matched = looked_up.reindex(_as_text(frame[left]).to_numpy())
    out = frame.reset_index(drop=True).copy()
    for column in matched.columns:
        out[column] = matched[column].to_numpy()
    log.info(
        "%s: %s of %s rows matched a row of the joined source",
        where,
        f"{int(frame[left].notna().sum()):,}",
        f"{len(frame):,}",
    )
    return out


def _refuse_guessed_dates(name: str, crm: str, source: str, text: pd.Series) -> None:
    """Without a declared format only ISO 8601 text is read; other text is refused, naming the readings it fits."""
    present = text.notna()
    iso = text.str.fullmatch(_ISO.pattern).fillna(False).astype(bool)
    rest = (present & ~iso).fillna(False).astype(bool)  # the values that need a reading
    if not rest.any():
        return
    parts = text.str.extract(_DAY_MONTH.pattern)
    shaped = parts[0].notna() & rest
    first, second = pd.to_numeric(parts[0], errors="coerce"), pd.to_numeric(parts[2], errors="coerce")
    where = f"table '{name}', column '{crm}' (source '{source}')"
    hint = f"declare its format under dates.{crm} (strptime, e.g. '%d/%m/%Y' or '%m/%d/%Y')"
    if (rest & ~shaped).any():
        bad = rest & ~shaped
        raise MappingError(
            f"{where}: {int(bad.sum())} value(s) are not ISO 8601 dates and no date format is "
            f"declared; e.g. {_examples(text, bad)}; {hint}"
        )
    day_first = shaped & (first > 12)
    month_first = shaped & (second > 12)
    if day_first.any() and month_first.any():
        raise MappingError(
            f"{where}: the rows mix two date readings: day first (e.g. {_examples(text, day_first)}) "
            f"and month first (e.g. {_examples(text, month_first)}); fix the export so that one "
            f"reading holds for every row, then {hint}"
        )
    if day_first.any() or month_first.any():
        reading = "day first (DD-MM)" if day_first.any() else "month first (MM-DD)"
        raise MappingError(
            f"{where}: no date format is declared and the values are not ISO 8601; they read "
            f"{reading} (e.g. {_examples(text, day_first | month_first)}); {hint}"
        )
    raise MappingError(
        f"{where}: ambiguous dates: every day and month is at most 12, so each value fits both "
        f"DD-MM and MM-DD; e.g. {_examples(text, shaped)}; {hint}"
    )


def _ids_as_integers(name: str, column: str, values: pd.Series, text_ids: bool) -> pd.Series:
    """Ids as int64 keys: whole numbers as they are; with `ids: text`, any string hashed to a stable 63-bit key."""
    text = _as_text(values)
    if text_ids:
        return text.map(text_id, na_action="ignore").astype("Int64")
    numbers = pd.to_numeric(text, errors="coerce")
    bad = text.notna() & (numbers.isna() | (numbers != np.floor(numbers.fillna(0))))
    if bad.any():
        raise MappingError(
            f"table '{name}', column '{column}': {int(bad.sum())} id(s) are not whole numbers; e.g. "
            f"{_examples(text, bad)}; set `ids: text` at the top of the mapping to keep string ids "
            "(Salesforce, HubSpot, hexadecimal) as the CRM's own key"
        )
    return numbers.astype("Int64")


def text_id(value: str) -> int:
    """The integer key of a text id: 53 bits of its BLAKE2b digest, stable across imports.

    53 bits, because a nullable integer column (leads.account_id) read back from SQL passes through float64, which
    holds integers exactly up to 2**53; two texts with one key are refused at import (about 1 in 20,000 at a
    million leads)."""
    import hashlib

    return int.from_bytes(hashlib.blake2b(value.encode(), digest_size=8).digest(), "big") & (2**53 - 1)


def map_table(
    name: str, frame: pd.DataFrame, table: TableMapping, target: Target | None = None, order: str | None = None
) -> pd.DataFrame:
    """One source frame as the CRM table's columns (renamed, value-mapped, dates parsed, constants added).

    Columns the source does not provide are left out; `apply_mapping` completes and validates the table.
    """
    _check_columns(name, frame, table, target, order)
    frame = _blank(frame.reset_index(drop=True), table.missing_values)
    out = pd.DataFrame(index=frame.index)
    for source, crm in table.columns.items():
        values = frame[source]
        if crm in table.values:
            values = _map_values(name, crm, source, values, table.values[crm])
        if crm in table.dates:
            values = _parse_dates(name, crm, source, values, table.dates[crm])
        elif crm in TIMESTAMP_COLUMNS[name] and (values.dtype == object or pd.api.types.is_string_dtype(values)):
            text = values.astype("string").str.strip()
            _refuse_guessed_dates(name, crm, source, text)
            values = pd.to_datetime(text, utc=True, format="ISO8601")
        out[crm] = values
    for crm, value in table.constants.items():
        out[crm] = pd.Series([value] * len(frame), index=frame.index, dtype=object)
    return out


_WEEKDAYS: Final = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def date_part(stamps: pd.Series, part: str) -> pd.Series:
    """One part of UTC timestamps: weekday and month as text categories (Mon, Jan), the rest as numbers."""
    at = pd.to_datetime(stamps, utc=True)
    if part == "weekday":
        return at.dt.day_of_week.map(lambda d: _WEEKDAYS[int(d)], na_action="ignore").astype("string")
    if part == "month":
        return at.dt.strftime("%b").astype("string")
    values = {"hour": at.dt.hour, "day_of_month": at.dt.day, "quarter": at.dt.quarter}[part]
    return values.astype("float64")


def _attributes(frame: pd.DataFrame, table: TableMapping, leads: pd.DataFrame) -> pd.DataFrame:
    frame = _blank(frame.reset_index(drop=True), table.missing_values)
    out = pd.DataFrame({ATTRIBUTES_KEY: leads["lead_id"].to_numpy()})
    for attr, spec in table.attributes.items():
        values = frame[spec.column]
        if spec.kind == "numeric":
            out[attr] = _numeric("leads", attr, spec.column, values).to_numpy()
        else:
            out[attr] = _as_text(values).to_numpy()
    for attr, derived in table.derived.items():
        out[attr] = date_part(leads[derived.column], derived.part).to_numpy()
    return out


def _positive(frame: pd.DataFrame, target: Target) -> np.ndarray:
    """Per lead, whether its target value is a declared positive; a value in neither declared set is refused."""
    text = _as_text(frame[target.column])
    if text.isna().any():
        raise MappingError(
            f"table 'leads', target column '{target.column}': {int(text.isna().sum())} row(s) have "
            f"no value; e.g. {_examples(text, text.isna())}"
        )
    other = ~text.isin([*target.positive, *target.negative])
    if other.any():
        distinct = sorted(text[other].unique().tolist())[:20]
        raise MappingError(
            f"table 'leads', target column '{target.column}': {int(other.sum())} row(s) hold value(s) {distinct} "
            f"that are neither positive {target.positive} nor negative {target.negative}; e.g. "
            f"{_examples(text, other)}; add each to target.positive or target.negative (nothing is guessed)"
        )
    return text.isin(target.positive).to_numpy()


def _empty(name: str) -> pd.DataFrame:
    return pd.DataFrame({column: pd.Series([], dtype=object) for column in SCHEMAS[name].columns})


def _complete(name: str, frame: pd.DataFrame) -> pd.DataFrame:
    """Generated ids (1..n) when the source has none; every other absent column is missing."""
    key = PRIMARY_KEYS[name]
    if key not in frame.columns:
        frame[key] = np.arange(1, len(frame) + 1, dtype=np.int64)
    for column in SCHEMAS[name].columns:
        if column not in frame.columns:
            frame[column] = pd.Series([None] * len(frame), index=frame.index, dtype=object)
    return frame[list(SCHEMAS[name].columns)]


def _latest_events(leads: pd.DataFrame, tables: Mapping[str, pd.DataFrame]) -> tuple[pd.Series, pd.Series]:
    """(latest stage, latest event time) per lead from the stage history and activities, aligned with `leads`."""
    stages = tables["stage_history"]
    created = pd.to_datetime(leads["created_at"], utc=True)
    latest_time = pd.Series(created.to_numpy(), index=leads["lead_id"].to_numpy())
    latest_stage = pd.Series("Open", index=leads["lead_id"].to_numpy(), dtype=object)
    if len(stages):
        entered = stages.assign(entered_at=pd.to_datetime(stages["entered_at"], utc=True)).sort_values(
            ["entered_at", "stage_history_id"]
        )
        last = entered.groupby("lead_id").tail(1).set_index("lead_id")
        latest_stage.loc[latest_stage.index.intersection(last.index)] = last["stage"]
        when = last["entered_at"].reindex(latest_time.index)
        latest_time = latest_time.where(~(when > latest_time).fillna(False).astype(bool), when)
    activities = tables["activities"]
    if len(activities):
        last_act = pd.to_datetime(activities["occurred_at"], utc=True).groupby(activities["lead_id"]).max()
        when = last_act.reindex(latest_time.index)
        latest_time = latest_time.where(~(when > latest_time).fillna(False).astype(bool), when)
    return latest_stage, latest_time


def _check_events_after_creation(tables: Mapping[str, pd.DataFrame]) -> None:
    """Refuse stage entries and activities dated before their lead's creation (a wrong date reading, or bad data)."""
    created = tables["leads"].set_index("lead_id")["created_at"]
    for name, column in (("stage_history", "entered_at"), ("activities", "occurred_at")):
        frame = tables[name]
        if frame.empty:
            continue
        own = created.reindex(frame["lead_id"].to_numpy()).to_numpy()
        early = (frame[column].to_numpy() < own) & pd.notna(own)
        if early.any():
            rows = np.flatnonzero(early)[:_MAX_EXAMPLES]
            key = PRIMARY_KEYS[name]
            shown = ", ".join(
                f"row {r + 1} ({key}={frame[key].iloc[r]}, lead_id={frame['lead_id'].iloc[r]}): "
                f"{frame[column].iloc[r]:%Y-%m-%d %H:%M} before created_at {own[r]:%Y-%m-%d %H:%M}"
                for r in rows
            )
            raise MappingError(
                f"table '{name}', column '{column}': {int(early.sum())} row(s) are dated before their "
                f"lead's creation (leads.created_at); e.g. {shown}; check the date formats of both "
                "tables (day-first vs month-first) and the data"
            )


def _key_columns(tables: dict[str, pd.DataFrame], text_ids: bool) -> pd.DataFrame | None:
    """Id columns as int64 keys in every mapped table; returns (lead_id, crm_id) for the leads given ids."""
    crm_ids = None
    for name, frame in tables.items():
        for column in ID_COLUMNS[name]:
            if column not in frame.columns:
                continue
            if name == "leads" and column == "lead_id":
                crm_ids = pd.DataFrame({"crm_id": _as_text(frame[column]).to_numpy()})
            frame[column] = _ids_as_integers(name, column, frame[column], text_ids)
        if name == "leads" and crm_ids is not None:
            crm_ids.insert(0, "lead_id", frame["lead_id"].to_numpy())
    if crm_ids is not None and text_ids:
        clash = crm_ids["lead_id"].duplicated(keep=False) & ~crm_ids["crm_id"].duplicated(keep=False)
        if clash.any():  # two different texts with one key: rare, but never silent
            raise MappingError(
                f"table 'leads', column 'lead_id': ids {crm_ids.loc[clash, 'crm_id'].head(5).tolist()} "
                "derive the same integer key; please report it (the key width would have to grow)"
            )
    return crm_ids


def _order_rank(frame: pd.DataFrame, order: Order) -> np.ndarray:
    """0..n-1 in time order: by the declared numeric column (ties refused), else by row."""
    if order.column is None:
        return np.arange(len(frame), dtype=np.int64)
    if order.column not in frame.columns:
        raise MappingError(
            f"order: column '{order.column}' not found in the leads source; it has {list(frame.columns)}"
        )
    text = _as_text(frame[order.column])
    values = pd.to_numeric(text, errors="coerce")
    bad = values.isna()
    if bad.any():
        raise MappingError(
            f"table 'leads', order column '{order.column}': {int(bad.sum())} value(s) are missing or "
            f"not numbers; e.g. {_examples(text, bad)}"
        )
    tied = values.duplicated(keep=False)
    if tied.any():
        raise MappingError(
            f"table 'leads', order column '{order.column}': {int(tied.sum())} row(s) share a value, so "
            f"their order is ambiguous; e.g. {_examples(text, tied)}"
        )
    return values.rank(method="first").to_numpy(dtype=np.int64) - 1


def _flag_labels(
    leads: pd.DataFrame, raw_leads: pd.DataFrame, mapping: CrmMapping
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any], dict[str, Any]]:
    """A target column without conversion dates: (leads, stage entries, report, label meta).

    Leads-only (no created_at): every lead created at snapshot_date and each positive one enters the target stage a
    day later. Dated: leads keep their creation time; a positive lead's entry is placed at the end of the export day,
    the one moment its outcome is known to hold (the features stage then labels each lead at its creation instead).
    """
    target = mapping.target
    assert target is not None and mapping.snapshot_date is not None
    positive = _positive(raw_leads.reset_index(drop=True), target)
    snapshot = pd.Timestamp(mapping.snapshot_date).tz_localize("UTC")
    dated = "created_at" in mapping.tables["leads"].columns.values()
    mapped_columns = mapping.tables["leads"].columns.values()
    if dated:
        export_end = snapshot + pd.Timedelta(days=1)
        created = pd.to_datetime(leads["created_at"], utc=True)
        after = (created >= export_end).fillna(False).to_numpy()
        if after.any():
            raise MappingError(
                f"table 'leads', column 'created_at': {int(after.sum())} lead(s) are created after the "
                f"export date snapshot_date={mapping.snapshot_date}; e.g. "
                f"{_examples(created.dt.strftime('%Y-%m-%d %H:%M'), after)}; set snapshot_date to the "
                "day the export was taken"
            )
        entered, kind = export_end, LABEL_DATED_FLAG
    elif mapping.order is not None:  # no dates, but an order: creation = rank seconds after the snapshot date
        rank = _order_rank(raw_leads.reset_index(drop=True), mapping.order)
        leads["created_at"] = snapshot + pd.to_timedelta(rank, unit="s")
        entered, kind = leads["created_at"].max() + pd.Timedelta(seconds=1), LABEL_DATED_FLAG
    else:
        leads["created_at"] = snapshot
        entered, kind = snapshot + TARGET_DELAY, LABEL_LEADS_ONLY
    leads = _complete("leads", leads)
    stages = pd.DataFrame(
        {
            "stage_history_id": np.arange(1, int(positive.sum()) + 1, dtype=np.int64),
            "lead_id": leads.loc[positive, "lead_id"].to_numpy(),
            "stage": target.stage,
            "entered_at": entered,
            "reason": f"mapped from target column '{target.column}'" + (" (conversion date unknown)" if dated else ""),
        }
    )
    if "status" not in mapped_columns:
        leads["status"] = np.where(positive, target.stage, "Open")
    if "updated_at" not in mapped_columns:
        base = pd.to_datetime(leads["created_at"], utc=True)
        leads["updated_at"] = base.where(~positive, entered).astype("datetime64[ns, UTC]")
    report = {
        "snapshot_date": str(mapping.snapshot_date),
        "target_column": target.column,
        "target_stage": target.stage,
        "positives": int(positive.sum()),
        "positive_rate": float(positive.mean()) if len(positive) else 0.0,
    }
    label: dict[str, Any] = {
        "label": kind,
        "target_column": target.column,
        "target_stage": target.stage,
        "export_date": str(mapping.snapshot_date),
    }
    if mapping.order is not None:
        label |= {"maturation_days": 0, "basis": "order", "order_column": mapping.order.column or "(row order)"}
        report |= {"order": mapping.order.column or "(row order)", "censored_leads": 0}
    if dated:
        assert target.maturation_days is not None
        cutoff = entered - pd.Timedelta(days=target.maturation_days)
        censored = int((pd.to_datetime(leads["created_at"], utc=True) > cutoff).sum())
        report |= {"maturation_days": target.maturation_days, "censored_leads": censored}
        label |= {"maturation_days": target.maturation_days, "censored_after": cutoff.isoformat()}
    return leads, stages, report, label


def apply_mapping(raw: Mapping[str, pd.DataFrame], mapping: CrmMapping) -> MappedCrm:
    """The pure core: raw source frames (one per mapped table and joined source) -> the validated CRM tables."""
    missing: list[str] = [name for name in mapping.tables if name not in raw]
    missing += [
        join_key(name, i)
        for name, t in mapping.tables.items()
        for i in range(len(t.joins))
        if join_key(name, i) not in raw
    ]
    if missing:
        raise MappingError(f"no source rows given for mapped table(s) {missing}")
    sources: dict[str, pd.DataFrame] = {}
    for name, table in mapping.tables.items():
        frame = raw[name].reset_index(drop=True)
        if table.unpivot is not None:
            frame = unpivot_source(name, frame, table.unpivot)
        for column, values in table.keep_rows.items():
            if column not in frame.columns:
                raise MappingError(
                    f"table '{name}', keep_rows: column '{column}' not found; the source has {list(frame.columns)}"
                )
            kept = _as_text(frame[column]).isin(values).fillna(False).to_numpy(dtype=bool)
            log.info(
                "table %s: keeping %s of %s rows whose %s is in %s",
                name,
                f"{int(kept.sum()):,}",
                f"{len(frame):,}",
                column,
                values,
            )
            frame = frame.loc[kept].reset_index(drop=True)
        for i, join in enumerate(table.joins):
            frame = join_source(name, frame, join, raw[join_key(name, i)], i)
        sources[name] = frame
    tables: dict[str, pd.DataFrame] = {}
    for name, table in mapping.tables.items():
        tables[name] = map_table(
            name, sources[name], table, mapping.target, mapping.order.column if mapping.order is not None else None
        )
    crm_ids = _key_columns(tables, mapping.ids == "text")
    leads = tables["leads"]
    report: dict[str, Any] = {
        "rows": {name: len(raw[name]) for name in mapping.tables},
        "leaky_dropped": {name: dict(t.leaky) for name, t in mapping.tables.items() if t.leaky},
        "ignored": {name: dict(t.ignore) for name, t in mapping.tables.items() if t.ignore},
        "ids": mapping.ids,
    }
    label: dict[str, Any] = {"label": LABEL_STAGE_HISTORY}
    if mapping.target is not None:
        leads, tables["stage_history"], flag_report, label = _flag_labels(leads, sources["leads"], mapping)
        report["leads_only" if label["label"] == LABEL_LEADS_ONLY else "dated_flag"] = flag_report
    else:
        leads = _complete("leads", leads)
    leads_only = label["label"] == LABEL_LEADS_ONLY
    for other in TABLES:
        if other == "leads":
            continue
        tables[other] = _complete(other, tables[other]) if other in tables else _empty(other)
    if mapping.target is None:
        latest_stage, latest_time = _latest_events(leads, tables)
        if leads["status"].isna().all():
            leads["status"] = latest_stage.to_numpy()
        if leads["updated_at"].isna().all():
            leads["updated_at"] = latest_time.to_numpy()
    tables["leads"] = leads
    checked = validate_crm(tables)
    if not leads_only:
        _check_events_after_creation(checked)
    attributes = canonical_attributes(
        _attributes(sources["leads"], mapping.tables["leads"], checked["leads"]), checked["leads"]["lead_id"]
    )
    report["attributes"] = {a: s.kind for a, s in mapping.tables["leads"].attributes.items()}
    report["attributes"] |= {a: f"derived: {d.part} of {d.column}" for a, d in mapping.tables["leads"].derived.items()}
    if crm_ids is None:  # generated lead ids: the CRM has no key of its own to go back to
        crm_ids = pd.DataFrame(
            {
                "lead_id": checked["leads"]["lead_id"].to_numpy(),
                "crm_id": checked["leads"]["lead_id"].astype(str).to_numpy(),
            }
        )
    crm_ids = crm_ids.astype({"lead_id": "int64", "crm_id": "string"})
    return MappedCrm(
        tables=checked, attributes=attributes, leads_only=leads_only, report=report, crm_ids=crm_ids, label=label
    )


def with_leaky_as_attributes(mapping: CrmMapping) -> CrmMapping:
    """The same mapping with every leaky leads column passed through as a categorical attribute.

    Only to measure how much the leak inflates the figures: a model trained on it is not usable.
    """
    leads = mapping.tables["leads"]
    extra = {}
    for column in leads.leaky:
        name = "leaky_" + re.sub(r"[^a-z0-9]+", "_", column.lower()).strip("_")
        extra[name[:63]] = Attribute(column=column, kind="categorical")
    changed = leads.model_copy(update={"attributes": {**leads.attributes, **extra}, "leaky": {}})
    return mapping.model_copy(update={"tables": {**mapping.tables, "leads": changed}})


def write_mapped(url: str, mapped: MappedCrm) -> None:
    """Replace the five CRM tables, `lead_attributes`, `lead_crm_ids` and `crm_import` at `url`, in one transaction."""
    from pipelines.crm.db import make_engine, replace_tables, scoring_indexes

    engine = make_engine(url, create_dirs=True)
    extra: dict[str, pd.DataFrame] = {IMPORT_TABLE: pd.DataFrame([{k: str(v) for k, v in mapped.label.items()}])}
    if mapped.crm_ids is not None:
        extra[CRM_IDS_TABLE] = mapped.crm_ids
    try:
        replace_tables(
            engine,
            {**mapped.tables, ATTRIBUTES_TABLE: mapped.attributes, **extra},
            {**PRIMARY_KEYS, ATTRIBUTES_TABLE: ATTRIBUTES_KEY, CRM_IDS_TABLE: "lead_id"},
            scoring_indexes(engine.dialect.name),
        )
    finally:
        engine.dispose()


__all__ = [
    "CRM_IDS_TABLE",
    "IMPORT_TABLE",
    "CrmMapping",
    "MappedCrm",
    "MappingError",
    "apply_mapping",
    "load_mapping",
    "parse_mapping",
    "read_sources",
    "text_id",
    "with_leaky_as_attributes",
    "write_mapped",
]
