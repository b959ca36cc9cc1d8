"""Database I/O for the CRM through SQLAlchemy: engines, safe identifiers, atomic bulk writes, typed reads.

The only module that talks to a database. Table and column names are checked against a strict identifier
pattern and quoted by the dialect; values always travel as bound parameters or through COPY. Passwords are
masked whenever a URL is shown.
"""

from __future__ import annotations

import csv
import io
import logging
import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Final

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from pipelines.crm.schema import PRIMARY_KEYS, SCHEMAS, TABLES, CrmDataError, validate_crm

log = logging.getLogger(__name__)

_IDENTIFIER: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_INSERT_BATCH: Final = 200_000


def check_identifier(name: str, what: str = "table") -> str:
    """`name` unchanged if it is a plain SQL identifier, else a ValueError that says why."""
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
        raise ValueError(
            f"{what} name {name!r} is not allowed: use letters, digits and underscores, starting with a letter "
            "or underscore, at most 63 characters"
        )
    return name


def display_url(url: str | sa.URL) -> str:
    """The URL with any password masked, fit for logs and error messages."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except (sa.exc.ArgumentError, ValueError):  # ValueError: a non-numeric port
        return "<unparseable database URL>"


def make_engine(url: str, create_dirs: bool = False) -> Engine:
    """An engine whose transactions cover DDL too (SQLite needs explicit BEGIN for that)."""
    try:
        parsed = sa.make_url(url)
        parsed.get_dialect()  # an unknown dialect fails here, before any file or directory is made
    except (sa.exc.ArgumentError, ValueError, ImportError) as exc:
        raise CrmDataError(f"not a usable database URL {display_url(url)}: {exc}") from None
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        path = Path(parsed.database)
        if create_dirs:
            path.parent.mkdir(parents=True, exist_ok=True)
        elif not path.exists():
            raise CrmDataError(f"database file {path} does not exist ({display_url(url)})")
    engine = sa.create_engine(parsed)
    if engine.dialect.name == "sqlite":

        @sa.event.listens_for(engine, "connect")
        def _no_implicit_transactions(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
            dbapi_connection.isolation_level = None

        @sa.event.listens_for(engine, "begin")
        def _begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN")

    return engine


def _sql_type(dtype: object) -> sa.types.TypeEngine:
    if isinstance(dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_any_dtype(dtype):
        return sa.DateTime(timezone=True)
    if pd.api.types.is_bool_dtype(dtype):
        return sa.Boolean()
    if pd.api.types.is_integer_dtype(dtype):
        return sa.BigInteger()
    if pd.api.types.is_float_dtype(dtype):
        return sa.Float()
    return sa.Text()


def table_for_frame(name: str, frame: pd.DataFrame, metadata: sa.MetaData,
                    primary_key: str | None = None) -> sa.Table:
    """A SQLAlchemy table whose columns mirror the frame's dtypes."""
    check_identifier(name)
    columns = [
        sa.Column(check_identifier(str(col), "column"), _sql_type(frame[col].dtype),
                  primary_key=(col == primary_key), autoincrement=False)
        for col in frame.columns
    ]
    return sa.Table(name, metadata, *columns)


def _python_rows(frame: pd.DataFrame, dialect: str) -> Iterator[tuple[object, ...]]:
    """Rows as tuples of plain Python values with None for missing; timestamps as UTC text on SQLite."""
    columns = []
    for col in frame.columns:
        values = frame[col]
        if isinstance(values.dtype, pd.DatetimeTZDtype):
            if dialect == "sqlite":
                utc = values.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy("datetime64[us]")
                text = np.char.replace(np.datetime_as_string(utc, unit="us"), "T", " ").astype(object)
                text[values.isna().to_numpy()] = None
                columns.append(text)
            else:
                columns.append(values.astype(object).where(values.notna(), None).to_numpy())
        elif pd.api.types.is_integer_dtype(values.dtype) and not values.hasnans:
            columns.append(values.to_numpy(dtype=np.int64).tolist())
        else:
            columns.append(values.astype(object).where(values.notna(), None).tolist())
    return zip(*columns, strict=True)


def _copy_postgres(conn: Connection, table: sa.Table, frame: pd.DataFrame) -> None:
    from psycopg import sql

    # An explicit NULL marker: with csv's default (an unquoted empty field) every "" would arrive as NULL.
    null = r"\N"
    if frame.select_dtypes(include=["object", "string"]).eq(null).any(axis=None):
        null = f"\\N{uuid.uuid4().hex}"
    cursor = conn.connection.driver_connection.cursor()
    statement = sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv, NULL {})").format(
        sql.Identifier(table.name), sql.SQL(", ").join(sql.Identifier(c.name) for c in table.columns),
        sql.Literal(null),
    )
    with cursor.copy(statement) as copy:
        for start in range(0, len(frame), _INSERT_BATCH):
            chunk = frame.iloc[start:start + _INSERT_BATCH]
            buffer = io.StringIO()
            chunk.to_csv(buffer, header=False, index=False, quoting=csv.QUOTE_MINIMAL, na_rep=null,
                         date_format="%Y-%m-%d %H:%M:%S.%f%z")
            copy.write(buffer.getvalue())


def insert_frame(conn: Connection, table: sa.Table, frame: pd.DataFrame) -> None:
    """Bulk insert inside the caller's transaction: COPY on PostgreSQL, batched executemany elsewhere."""
    if frame.empty:
        return
    dialect = conn.dialect.name
    if dialect == "postgresql":
        _copy_postgres(conn, table, frame)
        return
    preparer = conn.dialect.identifier_preparer
    placeholders = ", ".join("?" if dialect == "sqlite" else "%s" for _ in table.columns)
    statement = (
        f"INSERT INTO {preparer.format_table(table)} "
        f"({', '.join(preparer.quote(c.name) for c in table.columns)}) VALUES ({placeholders})"
    )
    cursor = conn.connection.driver_connection.cursor()
    rows = _python_rows(frame, dialect)
    while True:
        batch = [row for _, row in zip(range(_INSERT_BATCH), rows, strict=False)]
        if not batch:
            break
        cursor.executemany(statement, batch)


def replace_tables(engine: Engine, frames: Mapping[str, pd.DataFrame],
                   primary_keys: Mapping[str, str] | None = None) -> None:
    """Drop-and-recreate the given tables with the frames' rows, all in one transaction (all or nothing)."""
    primary_keys = primary_keys or {}
    metadata = sa.MetaData()
    tables = {name: table_for_frame(name, frame, metadata, primary_keys.get(name))
              for name, frame in frames.items()}
    with engine.begin() as conn:
        for table in reversed(list(tables.values())):
            table.drop(conn, checkfirst=True)
        for name, table in tables.items():
            table.create(conn)
            insert_frame(conn, table, frames[name])
            log.info("wrote %s rows to %s", f"{len(frames[name]):,}", name)


def read_table(engine: Engine, name: str, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """The table's rows (all or the named columns); errors name the missing table or column."""
    check_identifier(name)
    inspector = sa.inspect(engine)
    if not inspector.has_table(name):
        raise CrmDataError(f"table '{name}' not found in {display_url(engine.url)}")
    table = sa.Table(name, sa.MetaData(), autoload_with=engine)
    wanted = list(columns) if columns is not None else [c.name for c in table.columns]
    missing = [c for c in wanted if c not in table.columns]
    if missing:
        raise CrmDataError(
            f"table '{name}' is missing column(s) {missing}; it has {[c.name for c in table.columns]}"
        )
    query = sa.select(*(table.c[c] for c in wanted))
    with engine.connect() as conn:
        return pd.read_sql_query(query, conn)


def read_crm_ids(engine: Engine, table: str = "lead_crm_ids") -> pd.Series | None:
    """The CRM's own lead ids (text) by integer lead_id, as `leadscore import` wrote them; None when absent."""
    check_identifier(table)
    if not sa.inspect(engine).has_table(table):
        return None
    frame = read_table(engine, table, ["lead_id", "crm_id"])
    return pd.Series(frame["crm_id"].astype("string").to_numpy(), index=frame["lead_id"].astype("int64").to_numpy(),
                     name="crm_id")


def read_crm(engine: Engine) -> dict[str, pd.DataFrame]:
    """The five CRM tables, validated and with canonical dtypes."""
    frames = {name: read_table(engine, name, list(SCHEMAS[name].columns)) for name in TABLES}
    return validate_crm(frames)


def write_crm(engine: Engine, tables: Mapping[str, pd.DataFrame]) -> None:
    """Validate then atomically replace the five CRM tables."""
    checked = validate_crm(tables)
    replace_tables(engine, checked, PRIMARY_KEYS)
