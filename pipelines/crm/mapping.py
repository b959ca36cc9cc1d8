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
from pipelines.crm.attributes import ATTRIBUTES_KEY, ATTRIBUTES_TABLE, canonical_attributes
from pipelines.crm.db import check_identifier
from pipelines.crm.schema import PERSONAL_COLUMNS, PRIMARY_KEYS, SCHEMAS, TABLES, validate_crm
from pipelines.errors import BadInputError

log = logging.getLogger(__name__)

_MAX_EXAMPLES: Final = 5
_ENV: Final = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
#: Leads-only data: a positive lead enters the target stage this long after the single snapshot.
TARGET_DELAY: Final = pd.Timedelta(days=1)


class MappingError(BadInputError):
    """The mapping file or the data it maps is unusable; the message names file, table, column and rows."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_no_inline_password(url: str) -> None:
    """A password may reach a source URL only through ${ENV}: the mapping file lives in git like params.yaml."""
    try:
        check_url_has_no_password(url, hint="keep credentials out of mapping files: write the password as ${ENV} "
                                            "(e.g. postgresql://user:${CRM_PASSWORD}@host/db), or use ~/.pgpass")
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


class TableMapping(_Strict):
    """How one CRM table is read and mapped."""

    source: Source
    columns: dict[str, str] = Field(description="source column -> CRM column")
    values: dict[str, ValueMap] = Field(default_factory=dict, description="CRM column -> value map")
    dates: dict[str, str] = Field(default_factory=dict, description="CRM column -> strptime format of the source")
    constants: dict[str, Any] = Field(default_factory=dict, description="CRM column -> one value for every row")
    missing_values: list[str] = Field(default_factory=list, description="Source text meaning 'not answered'")
    attributes: dict[str, Attribute] = Field(default_factory=dict, description="Extra features (leads only)")
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
    """Leads-only data: the leads column that says whether a lead reached the target stage."""

    column: str = Field(min_length=1, description="Source column of the leads table")
    positive: list[str] = Field(min_length=1, description="Values meaning 'reached the target stage'")
    stage: Literal["SAL", "SQL", "Opportunity", "Won"] = Field(description="The CRM stage a positive value means")

    @field_validator("positive", mode="before")
    @classmethod
    def _as_text(cls, value: object) -> object:
        return [str(v) for v in value] if isinstance(value, list) else value


class CrmMapping(_Strict):
    """A whole mapping file."""

    description: str | None = None
    snapshot_date: date | None = Field(default=None, description="Leads-only data: the one snapshot date (UTC)")
    target: Target | None = None
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
                    problems.append(f"tables.{name}: '{column}' is not a column of the CRM table {name} "
                                    f"(expected one of {sorted(schema_columns)})")
            doubled = sorted({c for c in targets if targets.count(c) > 1} | (set(targets) & set(table.constants)))
            if doubled:
                problems.append(f"tables.{name}: CRM column(s) {doubled} are filled more than once")
            for column in table.values:
                if column not in targets:
                    problems.append(f"tables.{name}.values.{column}: no source column is mapped onto '{column}'")
            for column in table.dates:
                if column not in targets:
                    problems.append(f"tables.{name}.dates.{column}: no source column is mapped onto '{column}'")
            if table.attributes and name != "leads":
                problems.append(f"tables.{name}.attributes: only the leads table can pass attributes through")
            personal = set(PERSONAL_COLUMNS.get("leads", ())) | {"job_title"}
            for attr in table.attributes:
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
            if "created_at" in self.tables["leads"].columns.values():
                problems.append("target: a target column has no conversion dates, so the data is leads-only: "
                                "do not map created_at (every lead is created at snapshot_date)")
            if self.snapshot_date is None:
                problems.append("snapshot_date is required with a target column (leads-only data)")
            if "activities" in self.tables:
                problems.append("target: leads-only data (a target column) cannot have activities without dates")
        elif "stage_history" not in self.tables:
            problems.append("no labels: map a stage_history table, or give a target column (leads-only data)")
        if problems:
            raise ValueError("; ".join(problems))
        return self


@dataclass(frozen=True)
class MappedCrm:
    """The mapped CRM: the five validated tables, the lead attributes and what the mapping did."""

    tables: dict[str, pd.DataFrame]
    attributes: pd.DataFrame
    leads_only: bool
    report: dict[str, Any] = field(default_factory=dict)


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
        return pd.read_csv(path, sep=source.sep, encoding=source.encoding, dtype=str, keep_default_na=False,
                           na_values=[""])
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise MappingError(f"{where}: cannot read {path} as CSV: {exc}") from None


def read_sources(mapping: CrmMapping) -> dict[str, pd.DataFrame]:
    """The raw rows of every mapped table."""
    return {name: read_source(table.source, f"tables.{name}.source") for name, table in mapping.tables.items()}


# ----------------------------------------------------------------------------------------------------------------
# The pure core
# ----------------------------------------------------------------------------------------------------------------

def _examples(values: pd.Series, mask: pd.Series | np.ndarray) -> str:
    """'row 3: 'x', row 7: 'y'' for the first rows where `mask` holds (row = 1-based data row of the source)."""
    rows = np.flatnonzero(np.asarray(mask))[:_MAX_EXAMPLES]
    return ", ".join(f"row {r + 1}: {values.iloc[r]!r}" for r in rows)


def _check_columns(name: str, frame: pd.DataFrame, table: TableMapping, target: Target | None) -> None:
    named = {**{c: "columns" for c in table.columns}, **{a.column: "attributes" for a in table.attributes.values()},
             **{c: "leaky" for c in table.leaky}, **{c: "ignore" for c in table.ignore}}
    if target is not None and name == "leads":
        named[target.column] = "target"
    absent = [f"'{c}' (named in {where})" for c, where in named.items() if c not in frame.columns]
    if absent:
        raise MappingError(f"table '{name}': source column(s) {', '.join(absent)} not found; the source has "
                           f"{list(frame.columns)}")
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
        raise MappingError(f"table '{name}', column '{crm}' (source '{source}'): {int(bad.sum())} value(s) do not "
                           f"match the date format {fmt!r}; e.g. {_examples(text, bad)}")
    return parsed


def _numeric(name: str, attr: str, source: str, values: pd.Series) -> pd.Series:
    numbers = pd.to_numeric(values, errors="coerce")
    bad = values.notna() & numbers.isna()
    if bad.any():
        raise MappingError(f"table '{name}', attribute '{attr}' (source '{source}'): {int(bad.sum())} value(s) are "
                           f"not numbers; e.g. {_examples(values, bad)}; declare it categorical or fix the data")
    return numbers.astype("float64")


def map_table(name: str, frame: pd.DataFrame, table: TableMapping, target: Target | None = None) -> pd.DataFrame:
    """One source frame as the CRM table's columns (renamed, value-mapped, dates parsed, constants added).

    Columns the source does not provide are left out; `apply_mapping` completes and validates the table.
    """
    _check_columns(name, frame, table, target)
    frame = _blank(frame.reset_index(drop=True), table.missing_values)
    out = pd.DataFrame(index=frame.index)
    for source, crm in table.columns.items():
        values = frame[source]
        if crm in table.values:
            values = _map_values(name, crm, source, values, table.values[crm])
        if crm in table.dates:
            values = _parse_dates(name, crm, source, values, table.dates[crm])
        out[crm] = values
    for crm, value in table.constants.items():
        out[crm] = pd.Series([value] * len(frame), index=frame.index, dtype=object)
    return out


def _attributes(frame: pd.DataFrame, table: TableMapping, lead_ids: pd.Series) -> pd.DataFrame:
    frame = _blank(frame.reset_index(drop=True), table.missing_values)
    out = pd.DataFrame({ATTRIBUTES_KEY: lead_ids.to_numpy()})
    for attr, spec in table.attributes.items():
        values = frame[spec.column]
        if spec.kind == "numeric":
            out[attr] = _numeric("leads", attr, spec.column, values).to_numpy()
        else:
            out[attr] = _as_text(values).to_numpy()
    return out


def _positive(frame: pd.DataFrame, target: Target) -> np.ndarray:
    text = _as_text(frame[target.column])
    if text.isna().any():
        raise MappingError(f"table 'leads', target column '{target.column}': {int(text.isna().sum())} row(s) have "
                           f"no value; e.g. {_examples(text, text.isna())}")
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
            ["entered_at", "stage_history_id"])
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


def apply_mapping(raw: Mapping[str, pd.DataFrame], mapping: CrmMapping) -> MappedCrm:
    """The pure core: raw source frames (one per mapped table) -> the five validated CRM tables and attributes."""
    missing = [name for name in mapping.tables if name not in raw]
    if missing:
        raise MappingError(f"no source rows given for mapped table(s) {missing}")
    tables: dict[str, pd.DataFrame] = {}
    for name, table in mapping.tables.items():
        tables[name] = map_table(name, raw[name], table, mapping.target)
    leads = tables["leads"]
    report: dict[str, Any] = {
        "rows": {name: len(raw[name]) for name in mapping.tables},
        "leaky_dropped": {name: dict(t.leaky) for name, t in mapping.tables.items() if t.leaky},
        "ignored": {name: dict(t.ignore) for name, t in mapping.tables.items() if t.ignore},
    }
    leads_only = mapping.target is not None
    if leads_only:
        assert mapping.target is not None and mapping.snapshot_date is not None
        positive = _positive(raw["leads"].reset_index(drop=True), mapping.target)
        snapshot = pd.Timestamp(mapping.snapshot_date).tz_localize("UTC")
        leads["created_at"] = snapshot
        leads = _complete("leads", leads)
        entered = snapshot + TARGET_DELAY
        tables["stage_history"] = pd.DataFrame({
            "stage_history_id": np.arange(1, int(positive.sum()) + 1, dtype=np.int64),
            "lead_id": leads.loc[positive, "lead_id"].to_numpy(),
            "stage": mapping.target.stage,
            "entered_at": entered,
            "reason": f"mapped from target column '{mapping.target.column}'",
        })
        if "status" not in mapping.tables["leads"].columns.values():
            leads["status"] = np.where(positive, mapping.target.stage, "Open")
        if "updated_at" not in mapping.tables["leads"].columns.values():
            leads["updated_at"] = pd.Series(np.where(positive, entered, snapshot), index=leads.index).astype(
                "datetime64[ns, UTC]")
        report["leads_only"] = {"snapshot_date": str(mapping.snapshot_date), "target_column": mapping.target.column,
                                "target_stage": mapping.target.stage, "positives": int(positive.sum()),
                                "positive_rate": float(positive.mean()) if len(positive) else 0.0}
    else:
        leads = _complete("leads", leads)
    for name in TABLES:
        if name == "leads":
            continue
        tables[name] = _complete(name, tables[name]) if name in tables else _empty(name)
    if not leads_only:
        latest_stage, latest_time = _latest_events(leads, tables)
        if leads["status"].isna().all():
            leads["status"] = latest_stage.to_numpy()
        if leads["updated_at"].isna().all():
            leads["updated_at"] = latest_time.to_numpy()
    tables["leads"] = leads
    checked = validate_crm(tables)
    attributes = canonical_attributes(_attributes(raw["leads"], mapping.tables["leads"],
                                                  checked["leads"]["lead_id"]), checked["leads"]["lead_id"])
    report["attributes"] = {a: s.kind for a, s in mapping.tables["leads"].attributes.items()}
    return MappedCrm(tables=checked, attributes=attributes, leads_only=leads_only, report=report)


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
    """Replace the five CRM tables and `lead_attributes` in the database at `url`, in one transaction."""
    from pipelines.crm.db import make_engine, replace_tables

    engine = make_engine(url, create_dirs=True)
    try:
        replace_tables(engine, {**mapped.tables, ATTRIBUTES_TABLE: mapped.attributes},
                       {**PRIMARY_KEYS, ATTRIBUTES_TABLE: ATTRIBUTES_KEY})
    finally:
        engine.dispose()


__all__ = ["CrmMapping", "MappedCrm", "MappingError", "apply_mapping", "load_mapping", "parse_mapping",
           "read_sources", "with_leaky_as_attributes", "write_mapped"]
