"""The Spark engine's packed groups: a group's tables survive the packing exactly (nullable ids, nanosecond
timestamps, missing text), and the helpers that rebuild the run's inputs from the executors' rows agree with
what the pandas engine computes."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from pipelines.config import DemoCrmParams
from pipelines.crm.demo import generate
from pipelines.crm.schema import TABLES, validate_crm
from pipelines.score.groups import (
    DRIFT_PREFIX,
    GROUP,
    GROUPED,
    PREV_RULE_MQL,
    PREV_STAGE,
    TAG,
    drift_frame,
    packed,
    previous_of,
    read_columns,
    timestamp_columns,
    unpack,
)
from tests.support.params import demo_icp


@pytest.fixture(scope="module")
def tables() -> dict[str, pd.DataFrame]:
    demo = generate(DemoCrmParams(leads=120, seed=3, end_date=date(2026, 11, 20), history_days=120), demo_icp())
    return demo.tables


def _pack(tables: dict[str, pd.DataFrame]) -> pa.Table:
    """The layout pipelines.score.spark.pack builds in Spark: tag, group, `<table>__<column>`, ns int64 stamps."""
    parts = []
    for code, table in enumerate(GROUPED):
        frame = tables[table]
        columns: dict[str, pa.Array] = {
            TAG: pa.array(np.full(len(frame), code, dtype=np.int32)),
            GROUP: pa.array(np.zeros(len(frame), dtype=np.int32)),
        }
        for column in read_columns(table):
            values = frame[column]
            if column in timestamp_columns(table):
                columns[packed(table, column)] = pa.array(values.dt.tz_convert(None).to_numpy().astype(np.int64))
            elif values.dtype.kind in "iu" or str(values.dtype) == "Int64":
                columns[packed(table, column)] = pa.array(values.astype("Int64"), type=pa.int64(), from_pandas=True)
            else:
                columns[packed(table, column)] = pa.array(values.astype(object), from_pandas=True)
        parts.append(pa.table(columns))
    return pa.concat_tables(parts, promote_options="default")


def test_a_group_unpacks_to_the_tables_it_was_packed_from(tables: dict[str, pd.DataFrame]) -> None:
    assert tables["leads"]["account_id"].isna().any()  # nullable ids are really exercised
    group = _pack(tables)
    campaigns = tables["campaigns"][read_columns("campaigns")]
    got = validate_crm(unpack(group, campaigns), {t: read_columns(t) for t in TABLES})
    expected = validate_crm({t: tables[t][read_columns(t)] for t in TABLES}, {t: read_columns(t) for t in TABLES})
    for table in TABLES:
        pd.testing.assert_frame_equal(
            got[table].reset_index(drop=True), expected[table].reset_index(drop=True), check_dtype=True
        )
    assert str(got["activities"]["occurred_at"].dtype) == "datetime64[ns, UTC]"


def test_previous_and_drift_columns_give_back_what_count_lists_and_the_counter_read() -> None:
    rows = pd.DataFrame(
        {
            "lead_id": np.array([5, 6, 7], dtype=np.int64),
            PREV_STAGE: np.array(["MQL", None, "none"], dtype=object),
            PREV_RULE_MQL: [True, False, False],
            DRIFT_PREFIX + "title": ["VP", None, "CEO"],
            DRIFT_PREFIX + "visits": [1.0, np.nan, 3.0],
        }
    )
    previous = previous_of(rows)
    assert previous["lead_id"].tolist() == [5, 7]  # lead 6 was not open a cadence earlier
    assert previous["stage"].tolist() == ["MQL", "none"] and previous["rule_mql"].tolist() == [True, False]
    drift = drift_frame(rows, [("title", "categorical"), ("visits", "numeric")])
    assert list(drift.columns) == ["title", "visits"] and drift["title"].isna().tolist() == [False, True, False]
    assert drift.loc[[0, 2], "title"].tolist() == ["VP", "CEO"] and np.isnan(drift["visits"][1])
