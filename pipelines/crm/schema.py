"""The CRM contract: pandera schemas for the five tables and the checks that span tables.

Every table that enters the pipeline, from the demo generator, a database or a user's mapped export, passes
through `validate_crm`, so downstream code may rely on ids being unique, categories being spelled as in
`pipelines.crm.vocab`, and every timestamp being timezone-aware UTC. A violation raises `CrmDataError` whose
message names the table, the column, the check and example rows by their primary key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

import numpy as np
import pandas as pd
import pandera.pandas as pa

from pipelines.crm import vocab
from pipelines.errors import CrmDataError

__all__ = ["CrmDataError", "validate_crm", "validate_table"]

UTC_NS: Final = pd.DatetimeTZDtype("ns", "UTC")


def _ts() -> pa.Column:
    return pa.Column(UTC_NS, coerce=True)


def _text(*checks: pa.Check, nullable: bool = True) -> pa.Column:
    return pa.Column(str, list(checks), nullable=nullable, coerce=True)


def _category(values: tuple[str, ...] | frozenset[str], nullable: bool = False) -> pa.Column:
    return pa.Column(str, pa.Check.isin(sorted(values)), nullable=nullable, coerce=True)


def _id(unique: bool = True) -> pa.Column:
    return pa.Column("int64", pa.Check.ge(0), nullable=False, unique=unique, coerce=True)


def _ref() -> pa.Column:
    return pa.Column("Int64", pa.Check.ge(0), nullable=True, coerce=True)


SCHEMAS: Final[dict[str, pa.DataFrameSchema]] = {
    "campaigns": pa.DataFrameSchema(
        {
            "campaign_id": _id(),
            "name": _text(nullable=False),
            "channel": _category(vocab.CAMPAIGN_CHANNELS),
            "region": _category((*vocab.REGIONS, "Global")),
            "start_date": _ts(),
            "end_date": _ts(),
        },
        # Nulls are the column checks' business: a row fails only when both are present and out of order.
        checks=pa.Check(lambda df: ~(df["end_date"] < df["start_date"]), name="end_date >= start_date"),
        strict=True,
        ordered=False,
    ),
    "accounts": pa.DataFrameSchema(
        {
            "account_id": _id(),
            "company_name": _text(),
            "domain": _text(),
            "industry": _text(),
            "employee_count": pa.Column("Int64", pa.Check.ge(0), nullable=True, coerce=True),
            "annual_revenue": pa.Column("float64", pa.Check.ge(0), nullable=True, coerce=True),
            "country": _text(pa.Check.str_length(2, 2)),
            "region": _category(vocab.REGIONS, nullable=True),
        },
        strict=True,
    ),
    "leads": pa.DataFrameSchema(
        {
            "lead_id": _id(),
            "account_id": _ref(),
            "created_at": _ts(),
            "first_name": _text(),
            "last_name": _text(),
            "email": _text(),
            "phone": _text(),
            "job_title": _text(),
            "lead_source": _category(vocab.LEAD_SOURCES),
            "campaign_id": _ref(),
            "country": _text(pa.Check.str_length(2, 2)),
            "budget_range": _category(vocab.BUDGET_RANGES, nullable=True),
            "purchase_timeframe": _category(vocab.PURCHASE_TIMEFRAMES, nullable=True),
            "status": _category(vocab.LEAD_STATUSES),
            "updated_at": _ts(),
        },
        checks=pa.Check(lambda df: ~(df["updated_at"] < df["created_at"]), name="updated_at >= created_at"),
        strict=True,
    ),
    "activities": pa.DataFrameSchema(
        {
            "activity_id": _id(),
            "lead_id": _id(unique=False),
            "occurred_at": _ts(),
            "activity_type": _category(vocab.ACTIVITY_TYPES),
            "detail": _text(),
        },
        strict=True,
    ),
    "stage_history": pa.DataFrameSchema(
        {
            "stage_history_id": _id(),
            "lead_id": _id(unique=False),
            "stage": _category(vocab.STAGES),
            "entered_at": _ts(),
            "reason": _text(),
        },
        strict=True,
    ),
}

TABLES: Final[tuple[str, ...]] = tuple(SCHEMAS)
PRIMARY_KEYS: Final[dict[str, str]] = {
    "campaigns": "campaign_id",
    "accounts": "account_id",
    "leads": "lead_id",
    "activities": "activity_id",
    "stage_history": "stage_history_id",
}
TIMESTAMP_COLUMNS: Final[dict[str, tuple[str, ...]]] = {
    name: tuple(col for col, spec in schema.columns.items() if spec.dtype.type == UTC_NS)
    for name, schema in SCHEMAS.items()
}
#: (table, column) -> (referenced table, referenced key); checked across tables by `validate_crm`.
FOREIGN_KEYS: Final[dict[tuple[str, str], tuple[str, str]]] = {
    ("leads", "account_id"): ("accounts", "account_id"),
    ("leads", "campaign_id"): ("campaigns", "campaign_id"),
    ("activities", "lead_id"): ("leads", "lead_id"),
    ("stage_history", "lead_id"): ("leads", "lead_id"),
}
#: Columns holding personal data: they are read for validation and derived signals, never used as features.
PERSONAL_COLUMNS: Final[dict[str, tuple[str, ...]]] = {
    "leads": ("first_name", "last_name", "email", "phone"),
}

_MAX_EXAMPLES: Final = 5


def to_utc(values: pd.Series) -> pd.Series:
    """Timestamps as tz-aware UTC with nanosecond unit: naive values are taken to be UTC already."""
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        converted: pd.Series = values.dt.tz_convert("UTC").astype(UTC_NS)
        return converted
    if pd.api.types.is_datetime64_dtype(values.dtype):
        localized: pd.Series = values.dt.tz_localize("UTC").astype(UTC_NS)
        return localized
    try:  # the fast vectorised parser first; per-value inference only for other spellings
        return pd.to_datetime(values, utc=True, format="ISO8601").astype(UTC_NS)
    except (ValueError, TypeError):
        return pd.to_datetime(values, utc=True, format="mixed").astype(UTC_NS)


def _check_text(table: str, frame: pd.DataFrame) -> None:
    """Text columns must hold text: bytes (undecodable text from a driver or a file) name their rows."""
    key = PRIMARY_KEYS[table]
    for column, spec in SCHEMAS[table].columns.items():
        if spec.dtype.type is not str or frame[column].dtype != object:
            continue
        if pd.api.types.infer_dtype(frame[column], skipna=True) in ("string", "empty"):
            continue
        is_bytes = frame[column].map(lambda v: isinstance(v, bytes | bytearray)).to_numpy(dtype=bool)
        if is_bytes.any():
            rows = frame.loc[is_bytes].head(_MAX_EXAMPLES)
            examples = ", ".join(f"{key}={_plain(r[key])!r}: {r[column]!r}" for _, r in rows.iterrows())
            raise CrmDataError(
                f"table '{table}', column '{column}': {int(is_bytes.sum())} value(s) are bytes, not "
                f"UTF-8 text; e.g. {examples}"
            )


def _plain(value: object) -> object:
    """Numpy scalars as Python values, so messages read `lead_id=3` rather than `lead_id=np.int64(3)`."""
    return value.item() if isinstance(value, np.generic) else value


def _describe_failures(table: str, frame: pd.DataFrame, failures: pd.DataFrame) -> str:
    key = PRIMARY_KEYS[table]
    # A frame-wide check (end_date >= start_date) reports each column of a failing row: one line per check.
    wide = failures["schema_context"].eq("DataFrameSchema") & failures["index"].notna()
    failures = pd.concat([failures[~wide], failures[wide].assign(column=None).drop_duplicates(["check", "index"])])
    # a value of the wrong type also fails the column's dtype and value checks: say it once, as the type problem
    checks = failures["check"].astype(str)
    coerce = checks.str.startswith("coerce_dtype")
    uncoercible = set(failures.loc[coerce, "column"].dropna())
    keep = (coerce & failures["failure_case"].notna()) | checks.eq("not_nullable")  # a NULL: say NULL, not type
    failures = failures[~failures["column"].isin(uncoercible) | keep]
    lines = []
    for (column, check), group in failures.groupby(["column", "check"], sort=False, dropna=False):
        column_name = column if isinstance(column, str) and column else None
        null = check == "not_nullable"  # said in the user's words, without the empty value itself
        rows = [int(i) for i in group["index"].dropna().unique()[:_MAX_EXAMPLES] if int(i) < len(frame)]
        if rows and key in frame.columns:
            shown = ", ".join(
                dict.fromkeys(
                    f"{key}={_plain(frame[key].iloc[r])!r}"
                    + (
                        f": {_plain(frame[column_name].iloc[r])!r}"
                        if column_name in frame.columns and column_name != key and not null
                        else ""
                    )
                    for r in rows
                )
            )
        else:
            shown = ", ".join(repr(_plain(v)) for v in group["failure_case"].unique()[:_MAX_EXAMPLES])
        where = f", column '{column_name}'" if column_name else ""
        what = "NULL where a value is required (not_nullable) in" if null else f"check {check} failed for"
        lines.append(f"table '{table}'{where}: {what} {len(group)} row(s); e.g. {shown or 'see the column'}")
    return "\n".join(lines)


def _schema_of(table: str, columns: Sequence[str] | None) -> pa.DataFrameSchema:
    """The table's schema, or its part for `columns` (frame-wide checks need every column, so they go with it)."""
    schema = SCHEMAS[table]
    if columns is None or set(schema.columns) <= set(columns):
        return schema
    unknown = [c for c in columns if c not in schema.columns]
    if unknown:
        raise CrmDataError(f"table '{table}' has no column(s) {unknown}; expected some of {list(schema.columns)}")
    part = schema.select_columns(list(columns))
    part.checks = []
    return part


def validate_table(table: str, frame: pd.DataFrame, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """One table checked against its schema (or only its `columns`) and returned with canonical dtypes."""
    if table not in SCHEMAS:
        raise CrmDataError(f"unknown CRM table '{table}'; expected one of {', '.join(TABLES)}")
    schema = _schema_of(table, columns)
    missing = [c for c in schema.columns if c not in frame.columns]
    if missing:
        raise CrmDataError(f"table '{table}' is missing column(s) {missing}; it has {list(frame.columns)}")
    extra = [c for c in frame.columns if c not in schema.columns]
    if extra:
        raise CrmDataError(f"table '{table}' has unexpected column(s) {extra}; expected {list(schema.columns)}")
    frame = frame.reset_index(drop=True)
    _check_text(table, frame)
    for column in (c for c in TIMESTAMP_COLUMNS[table] if c in schema.columns):
        try:
            frame[column] = to_utc(frame[column])
        except (ValueError, TypeError) as exc:
            parsed = pd.to_datetime(frame[column], utc=True, errors="coerce", format="mixed")
            # NaT for text that is no date; outside the nanosecond range for sentinels such as 9999-12-31.
            in_range = parsed.between(pd.Timestamp.min.tz_localize("UTC"), pd.Timestamp.max.tz_localize("UTC"))
            bad = frame.loc[~in_range & frame[column].notna()].head(_MAX_EXAMPLES)
            examples = ", ".join(
                f"{PRIMARY_KEYS[table]}={r[PRIMARY_KEYS[table]]!r}: {r[column]!r}" for _, r in bad.iterrows()
            )
            raise CrmDataError(
                f"table '{table}', column '{column}': not a timestamp (within 1677-2262); e.g. {examples}"
            ) from exc
    try:
        return schema.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as exc:
        raise CrmDataError(_describe_failures(table, frame, exc.failure_cases)) from None


def validate_crm(
    tables: Mapping[str, pd.DataFrame], columns: Mapping[str, Sequence[str]] | None = None
) -> dict[str, pd.DataFrame]:
    """All five tables checked one by one, then for references between them; returns canonical frames.

    `columns` (per table) validates frames read with only those columns, e.g. the scoring reader's.
    """
    absent = [t for t in TABLES if t not in tables]
    if absent:
        raise CrmDataError(f"CRM is missing table(s) {absent}")
    checked = {name: validate_table(name, tables[name], None if columns is None else columns[name]) for name in TABLES}
    problems = []
    for (table, column), (ref_table, ref_key) in FOREIGN_KEYS.items():
        values = checked[table][column]
        orphan = values.notna() & ~values.isin(checked[ref_table][ref_key])
        if orphan.any():
            rows = checked[table].loc[orphan].head(_MAX_EXAMPLES)
            key = PRIMARY_KEYS[table]
            examples = ", ".join(f"{key}={r[key]!r}: {column}={r[column]!r}" for _, r in rows.iterrows())
            problems.append(
                f"table '{table}', column '{column}': {int(orphan.sum())} row(s) refer to no row of "
                f"'{ref_table}.{ref_key}'; e.g. {examples}"
            )
    if problems:
        raise CrmDataError("\n".join(problems))
    return checked
