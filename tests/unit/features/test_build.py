"""The public feature API: one code path for training and scoring, the column contract, and the Arrow output."""

from __future__ import annotations

import pandas as pd
import pytest
from crm_builder import ALL_CURRENT_VALUES, at, build_crm, lead, params, snapshots

from pipelines.crm.schema import PERSONAL_COLUMNS
from pipelines.features.build import (
    build_features,
    empty_features,
    feature_specs,
    features_as_of,
    iter_feature_chunks,
    personal_columns,
)


@pytest.fixture
def tables() -> dict[str, pd.DataFrame]:
    return build_crm(
        [
            lead(1, account_id=10, campaign_id=1),
            lead(2, created=2, account_id=10),
            lead(3, created=3),
            lead(4, created=30),
        ],
        activities=[(1, 1, "email_open"), (2, 3, "pricing_page_visit"), (3, 4, "content_download", "ebook")],
        stages=[(3, 5, "MQL"), (3, 6, "Disqualified"), (2, 8, "SQL")],
    )


def test_columns_are_keys_then_the_listed_features_with_matching_kinds(tables: dict[str, pd.DataFrame]) -> None:
    opted_in = params(current_value_fields=ALL_CURRENT_VALUES)
    frame = build_features(tables, snapshots([(1, 10), (2, 4)]), opted_in)

    specs = feature_specs(opted_in)
    assert list(frame.columns) == ["lead_id", "snapshot_at", *(s.name for s in specs)]
    assert len({s.name for s in specs}) == len(specs)
    for spec in specs:
        is_category = isinstance(frame[spec.name].dtype, pd.CategoricalDtype)
        assert is_category == (spec.kind == "categorical"), spec.name
        assert is_category or pd.api.types.is_numeric_dtype(frame[spec.name]), spec.name
    assert {s.family for s in specs} == {
        "fit",
        "title",
        "source",
        "self_reported",
        "bogus",
        "engagement",
        "recency",
        "velocity",
        "content",
        "lifecycle",
        "stage",
        "account",
    }


def test_no_personal_data_and_no_current_status_become_features() -> None:
    names = {s.name for s in feature_specs(params())}

    assert not names & personal_columns()
    assert not names & set(PERSONAL_COLUMNS["leads"])
    assert not names & {"status", "updated_at", "job_title", "company_name", "domain", "name"}


def test_rows_come_back_in_input_order_with_extra_columns_carried(tables: dict[str, pd.DataFrame]) -> None:
    rows = snapshots([(2, 9), (1, 3), (1, 9), (3, 4)])
    rows["label"] = pd.Series([1, 0, 0, 1], dtype="int8")

    frame = build_features(tables, rows, params(chunk_leads=1))

    assert frame["lead_id"].tolist() == [2, 1, 1, 3]
    assert frame["snapshot_at"].tolist() == rows["snapshot_at"].tolist()
    assert frame["label"].tolist() == [1, 0, 0, 1] and frame["label"].dtype == "int8"


def test_scoring_as_of_now_goes_through_the_training_code(tables: dict[str, pd.DataFrame]) -> None:
    now = at(10.5)

    scored = features_as_of(tables, now, params())
    trained = build_features(tables, snapshots([(1, now), (2, now), (3, now), (4, now)]), params())

    assert scored["lead_id"].tolist() == [1]  # 2 reached SQL, 3 is disqualified, 4 does not exist yet
    pd.testing.assert_frame_equal(scored, trained[trained["lead_id"] == 1].reset_index(drop=True))


def test_naive_snapshot_times_are_taken_as_utc(tables: dict[str, pd.DataFrame]) -> None:
    aware = snapshots([(1, 10)])
    naive = aware.assign(snapshot_at=aware["snapshot_at"].dt.tz_localize(None))

    pd.testing.assert_frame_equal(build_features(tables, naive, params()), build_features(tables, aware, params()))


def test_unknown_leads_and_missing_columns_are_refused(tables: dict[str, pd.DataFrame]) -> None:
    with pytest.raises(ValueError, match="unknown lead"):
        build_features(tables, snapshots([(99, 10)]), params())
    with pytest.raises(ValueError, match="snapshot_at"):
        build_features(tables, pd.DataFrame({"lead_id": [1]}), params())


def test_no_snapshots_give_an_empty_frame_with_the_columns(tables: dict[str, pd.DataFrame]) -> None:
    empty = build_features(tables, snapshots([]), params())

    assert empty.empty
    assert list(empty.columns) == list(empty_features(snapshots([]), params()).columns)


def test_arrow_chunks_hold_the_same_values_as_frames(tables: dict[str, pd.DataFrame]) -> None:
    rows = snapshots([(1, 10), (2, 4), (3, 5)])

    for chunk in iter_feature_chunks(tables, rows, params(chunk_leads=1), progress=False):
        from_arrow = chunk.to_arrow().to_pandas()
        pd.testing.assert_frame_equal(from_arrow, chunk.to_frame(), check_categorical=False)
        for name, values in chunk.columns.items():
            if isinstance(values, pd.Categorical):
                assert list(from_arrow[name].cat.categories) == list(values.categories)
