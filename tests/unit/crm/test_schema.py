"""The CRM contract: valid data passes with canonical dtypes; each kind of bad data fails with a message that
names the table, the column and an example row by its primary key."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import pandas as pd
import pytest

from pipelines.crm.schema import (
    PRIMARY_KEYS,
    SCHEMAS,
    TABLES,
    TIMESTAMP_COLUMNS,
    UTC_NS,
    CrmDataError,
    to_utc,
    validate_crm,
    validate_table,
)

Crm = dict[str, pd.DataFrame]


def set_value(table: str, column: str, row: int, value: object) -> Callable[[Crm], None]:
    """A mutation that puts `value` into one cell (the column made object first, so any value fits)."""

    def mutate(crm: Crm) -> None:
        crm[table][column] = crm[table][column].astype(object)
        crm[table].loc[row, column] = value

    return mutate


def test_tiny_crm_passes_and_comes_back_with_canonical_dtypes(tiny_crm: Crm) -> None:
    checked = validate_crm(tiny_crm)

    assert list(checked) == list(TABLES)
    for table, frame in checked.items():
        assert list(frame.columns) == list(SCHEMAS[table].columns)
        assert frame[PRIMARY_KEYS[table]].dtype == "int64"
        for column in TIMESTAMP_COLUMNS[table]:
            assert frame[column].dtype == UTC_NS, (table, column)
    assert checked["leads"]["account_id"].dtype == "Int64"  # nullable reference
    assert checked["accounts"]["employee_count"].dtype == "Int64"
    assert checked["leads"]["account_id"].isna().tolist() == [False, False, True]


def test_validate_crm_takes_naive_timestamps_as_utc_and_converts_offsets(tiny_crm: Crm) -> None:
    leads = validate_crm(tiny_crm)["leads"]

    assert leads["created_at"].tolist() == [
        pd.Timestamp("2025-03-02 09:15:00", tz="UTC"),  # naive: already UTC
        pd.Timestamp("2025-05-11 14:00:00", tz="UTC"),  # 16:00+02:00
        pd.Timestamp("2025-06-01 08:00:00", tz="UTC"),
    ]


def test_validate_crm_does_not_modify_its_input(tiny_crm: Crm) -> None:
    before = {name: frame.copy() for name, frame in tiny_crm.items()}

    validate_crm(tiny_crm)

    for name, frame in tiny_crm.items():
        pd.testing.assert_frame_equal(frame, before[name])


def test_validate_crm_accepts_empty_event_tables(tiny_crm: Crm) -> None:
    tiny_crm["activities"] = tiny_crm["activities"].iloc[0:0]
    tiny_crm["stage_history"] = tiny_crm["stage_history"].iloc[0:0]

    checked = validate_crm(tiny_crm)

    assert len(checked["activities"]) == 0
    assert checked["activities"]["occurred_at"].dtype == UTC_NS


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        pytest.param(
            set_value("activities", "activity_type", 1, "telepathy"),
            ["'activities'", "'activity_type'", "activity_id=101", "'telepathy'"],
            id="unknown-activity-type",
        ),
        pytest.param(
            set_value("stage_history", "stage", 2, "Closed Won"),
            ["'stage_history'", "'stage'", "stage_history_id=1002", "'Closed Won'"],
            id="unknown-stage",
        ),
        pytest.param(
            set_value("leads", "status", 2, "Hot"), ["'leads'", "'status'", "lead_id=3", "'Hot'"], id="unknown-status"
        ),
        pytest.param(
            set_value("leads", "lead_id", 2, 2),
            ["'leads'", "'lead_id'", "lead_id=2", "uniqueness"],
            id="duplicate-primary-key",
        ),
        pytest.param(
            set_value("leads", "lead_source", 2, None),
            ["'leads'", "'lead_source'", "lead_id=3", "not_nullable"],
            id="null-in-non-null-text",
        ),
        pytest.param(
            set_value("activities", "lead_id", 2, None),
            ["'activities'", "'lead_id'", "activity_id=102", "NULL"],
            id="null-in-non-null-id",
        ),
        pytest.param(
            set_value("leads", "created_at", 2, None),
            ["'leads'", "'created_at'", "lead_id=3", "NULL"],
            id="null-timestamp",
        ),
        pytest.param(
            set_value("accounts", "employee_count", 1, "lots"),
            ["'accounts'", "'employee_count'", "account_id=11", "'lots'"],
            id="text-in-employee-count",
        ),
        pytest.param(
            set_value("accounts", "employee_count", 1, -5),
            ["'accounts'", "'employee_count'", "account_id=11"],
            id="negative-employee-count",
        ),
        pytest.param(
            set_value("accounts", "country", 1, "DEU"),
            ["'accounts'", "'country'", "account_id=11", "'DEU'"],
            id="country-not-two-letters",
        ),
        pytest.param(
            set_value("activities", "occurred_at", 2, "not a date"),
            ["'activities'", "'occurred_at'", "activity_id=102", "'not a date'"],
            id="unparseable-timestamp",
        ),
        pytest.param(
            set_value("activities", "occurred_at", 1, "9999-12-31"),
            ["'activities'", "'occurred_at'", "activity_id=101", "'9999-12-31'"],
            id="out-of-range-timestamp",
        ),
        pytest.param(
            set_value("activities", "lead_id", 2, 99),
            ["'activities'", "'lead_id'", "activity_id=102", "lead_id=99", "'leads.lead_id'"],
            id="activity-of-unknown-lead",
        ),
        pytest.param(
            set_value("stage_history", "lead_id", 0, 99),
            ["'stage_history'", "'lead_id'", "stage_history_id=1000", "lead_id=99"],
            id="stage-of-unknown-lead",
        ),
        pytest.param(
            set_value("leads", "account_id", 1, 77),
            ["'leads'", "'account_id'", "lead_id=2", "account_id=77", "'accounts.account_id'"],
            id="lead-of-unknown-account",
        ),
        pytest.param(
            set_value("leads", "campaign_id", 0, 77),
            ["'leads'", "'campaign_id'", "lead_id=1", "campaign_id=77"],
            id="lead-of-unknown-campaign",
        ),
        pytest.param(
            set_value("campaigns", "end_date", 1, "2025-05-01"),
            ["'campaigns'", "end_date >= start_date", "campaign_id=2"],
            id="end-before-start",
        ),
        pytest.param(
            set_value("leads", "updated_at", 1, "2025-01-01"),
            ["'leads'", "updated_at >= created_at", "lead_id=2"],
            id="updated-before-created",
        ),
    ],
)
def test_bad_data_raises_naming_table_column_and_example_row(
    tiny_crm: Crm, mutate: Callable[[Crm], None], expected: list[str]
) -> None:
    mutate(tiny_crm)

    with pytest.raises(CrmDataError) as caught:
        validate_crm(tiny_crm)

    message = str(caught.value)
    for part in expected:
        assert part in message, f"{part!r} not in:\n{message}"
    assert "np.int64" not in message  # keys read as in the data, not as numpy reprs


def test_bad_row_is_named_by_its_key_whatever_the_frame_index(tiny_crm: Crm) -> None:
    tiny_crm["leads"].index = [7, 5, 6]
    set_value("leads", "status", 6, "Hot")(tiny_crm)  # row labelled 6: the third row, lead_id=3

    with pytest.raises(CrmDataError, match=r"lead_id=3: 'Hot'"):
        validate_crm(tiny_crm)


def test_a_row_wide_check_is_reported_once_not_once_per_column(tiny_crm: Crm) -> None:
    set_value("campaigns", "end_date", 1, "2025-05-01")(tiny_crm)

    with pytest.raises(CrmDataError) as caught:
        validate_crm(tiny_crm)

    assert str(caught.value).count("end_date >= start_date") == 1


def test_a_null_timestamp_is_reported_as_null_not_as_out_of_order(tiny_crm: Crm) -> None:
    set_value("leads", "created_at", 2, None)(tiny_crm)

    with pytest.raises(CrmDataError) as caught:
        validate_crm(tiny_crm)

    assert "updated_at >= created_at" not in str(caught.value)


def test_missing_column_is_named(tiny_crm: Crm) -> None:
    tiny_crm["activities"] = tiny_crm["activities"].drop(columns="detail")

    with pytest.raises(CrmDataError, match=r"table 'activities' is missing column\(s\) \['detail'\]"):
        validate_crm(tiny_crm)


def test_extra_column_is_named(tiny_crm: Crm) -> None:
    tiny_crm["leads"]["score"] = [0.1, 0.2, 0.3]

    with pytest.raises(CrmDataError, match=r"table 'leads' has unexpected column\(s\) \['score'\]"):
        validate_crm(tiny_crm)


def test_missing_table_is_named(tiny_crm: Crm) -> None:
    del tiny_crm["stage_history"]

    with pytest.raises(CrmDataError, match=r"missing table\(s\) \['stage_history'\]"):
        validate_crm(tiny_crm)


def test_unknown_table_name_is_refused() -> None:
    with pytest.raises(CrmDataError, match="unknown CRM table 'opportunities'"):
        validate_table("opportunities", pd.DataFrame())


def test_several_problems_are_all_reported_at_once(tiny_crm: Crm) -> None:
    set_value("activities", "activity_type", 0, "telepathy")(tiny_crm)
    set_value("activities", "activity_id", 2, 101)(tiny_crm)

    with pytest.raises(CrmDataError) as caught:
        validate_crm(tiny_crm)

    assert "'activity_type'" in str(caught.value)
    assert "'activity_id'" in str(caught.value)


# --- to_utc ---------------------------------------------------------------------------------------------------


def test_to_utc_takes_naive_datetimes_as_utc() -> None:
    naive = pd.Series(pd.to_datetime(["2025-01-01 12:00", "2025-07-01 12:00"]))

    result = to_utc(naive)

    assert result.dtype == UTC_NS
    assert result.tolist() == [pd.Timestamp("2025-01-01 12:00", tz="UTC"), pd.Timestamp("2025-07-01 12:00", tz="UTC")]


def test_to_utc_converts_tz_aware_datetimes() -> None:
    berlin = pd.Series(pd.to_datetime(["2025-01-01 12:00", "2025-07-01 12:00"]).tz_localize("Europe/Berlin"))

    result = to_utc(berlin)

    assert result.dtype == UTC_NS
    assert result.tolist() == [pd.Timestamp("2025-01-01 11:00", tz="UTC"), pd.Timestamp("2025-07-01 10:00", tz="UTC")]


def test_to_utc_parses_mixed_text_and_keeps_missing_values_missing() -> None:
    text = pd.Series(["2025-01-01 12:00", "2025-06-01T12:00:00+02:00", "2025-06-01T12:00:00Z", None])

    result = to_utc(text)

    assert result.dtype == UTC_NS
    assert result.iloc[:3].tolist() == [
        pd.Timestamp("2025-01-01 12:00", tz="UTC"),
        pd.Timestamp("2025-06-01 10:00", tz="UTC"),
        pd.Timestamp("2025-06-01 12:00", tz="UTC"),
    ]
    assert pd.isna(result.iloc[3])


def test_to_utc_handles_python_datetimes_and_other_units() -> None:
    objects = pd.Series([datetime(2025, 1, 1, 12), datetime(2025, 1, 1, 12, tzinfo=timezone(timedelta(hours=-5)))])
    seconds = pd.Series(pd.to_datetime(["2025-01-01 12:00"]).as_unit("s").tz_localize(UTC))

    assert to_utc(objects).tolist() == [
        pd.Timestamp("2025-01-01 12:00", tz="UTC"),
        pd.Timestamp("2025-01-01 17:00", tz="UTC"),
    ]
    assert to_utc(seconds).dtype == UTC_NS
