"""The column mapping's pure core on tiny frames: renames, value maps, dates, leaky drops, leads-only targets, and
errors that name the file, key, table, column and row."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from pipelines.crm.attributes import ATTRIBUTES_TABLE
from pipelines.crm.mapping import (
    MappingError,
    apply_mapping,
    expand_env,
    load_mapping,
    parse_mapping,
    read_sources,
    with_leaky_as_attributes,
    write_mapped,
)
from pipelines.errors import CrmDataError

HERE = Path("mapping.yaml")


def _raw_leads() -> pd.DataFrame:
    # as a CSV export reads: text everywhere, "Select" for unanswered questions
    return pd.DataFrame(
        {
            "ID": ["101", "102", "103"],
            "Created": ["03/01/2025 09:15", "04/01/2025 10:00", "05/01/2025 11:30"],
            "Src": ["Google", "Referral program", "Google"],
            "Land": ["Germany", "India", "Select"],
            "Visits": ["3", "0", None],
            "Job": ["Student", "Select", "Working"],
            "Tags": ["Closed", "Ringing", None],
            "Uuid": ["a", "b", "c"],
        }
    )


def _raw_stages() -> pd.DataFrame:
    return pd.DataFrame({"Lead": ["101", "102"], "Stage": ["qualified", "won"], "When": ["2025-01-10", "2025-01-20"]})


def _mapping(**leads_changes: Any) -> dict[str, Any]:
    leads = {
        "source": {"path": "leads.csv"},
        "missing_values": ["Select"],
        "columns": {"ID": "lead_id", "Created": "created_at", "Src": "lead_source", "Land": "country"},
        "dates": {"created_at": "%d/%m/%Y %H:%M"},
        "values": {
            "lead_source": {"map": {"Google": "paid_search", "Referral program": "referral"}},
            "country": {"map": {"Germany": "DE", "India": "IN"}},
        },
        "attributes": {
            "visits": {"column": "Visits", "kind": "numeric"},
            "occupation": {"column": "Job", "kind": "categorical"},
        },
        "leaky": {"Tags": "set by sales after contact"},
        "ignore": {"Uuid": "an identifier"},
    }
    leads.update(leads_changes)
    return {
        "tables": {
            "leads": leads,
            "stage_history": {
                "source": {"path": "stages.csv"},
                "columns": {"Lead": "lead_id", "Stage": "stage", "When": "entered_at"},
                "values": {"stage": {"map": {"qualified": "SQL", "won": "Won"}}},
                "dates": {"entered_at": "%Y-%m-%d"},
            },
        },
    }


def _apply(raw_mapping: dict[str, Any], leads: pd.DataFrame | None = None):
    mapping = parse_mapping(raw_mapping, HERE)
    raw = {"leads": _raw_leads() if leads is None else leads, "stage_history": _raw_stages()}
    return apply_mapping({k: v for k, v in raw.items() if k in mapping.tables}, mapping)


def test_renames_value_maps_dates_and_attributes_give_valid_crm_tables() -> None:
    mapped = _apply(_mapping())
    leads = mapped.tables["leads"].set_index("lead_id")
    assert list(leads.index) == [101, 102, 103]
    assert leads.loc[101, "created_at"] == pd.Timestamp("2025-01-03 09:15", tz="UTC")  # day first, as the format says
    assert leads["lead_source"].tolist() == ["paid_search", "referral", "paid_search"]
    assert leads.loc[101, "country"] == "DE" and pd.isna(leads.loc[103, "country"])  # "Select" -> missing
    # status and updated_at follow the stage history when the source has none
    assert leads["status"].tolist() == ["SQL", "Won", "Open"]
    assert leads.loc[102, "updated_at"] == pd.Timestamp("2025-01-20", tz="UTC")
    stages = mapped.tables["stage_history"]
    assert stages["stage"].tolist() == ["SQL", "Won"] and stages["stage_history_id"].tolist() == [1, 2]
    assert mapped.tables["activities"].empty and "activity_id" in mapped.tables["activities"].columns
    attrs = mapped.attributes.set_index("lead_id")
    assert attrs["visits"].dtype == "float64" and attrs.loc[101, "visits"] == 3.0 and pd.isna(attrs.loc[103, "visits"])
    assert attrs.loc[101, "occupation"] == "Student" and pd.isna(attrs.loc[102, "occupation"])
    assert not mapped.leads_only


def test_leaky_and_ignored_columns_never_reach_the_output_and_their_reasons_are_reported() -> None:
    mapped = _apply(_mapping())
    everything = set(mapped.attributes.columns).union(*(set(t.columns) for t in mapped.tables.values()))
    assert not {"Tags", "Uuid", "tags", "uuid"} & everything
    assert "Closed" not in mapped.attributes.to_string()
    assert mapped.report["leaky_dropped"] == {"leads": {"Tags": "set by sales after contact"}}


def test_leaky_columns_can_be_kept_only_on_request_to_measure_the_leak() -> None:
    mapping = with_leaky_as_attributes(parse_mapping(_mapping(), HERE))
    mapped = apply_mapping({"leads": _raw_leads(), "stage_history": _raw_stages()}, mapping)
    assert mapped.attributes.set_index("lead_id").loc[101, "leaky_tags"] == "Closed"


def test_a_leaky_column_needs_a_reason_and_the_error_names_file_and_key() -> None:
    with pytest.raises(MappingError, match=r"(?s)mapping\.yaml: .*key tables\.leads\.leaky.*reason.*\['Tags'\]"):
        parse_mapping(_mapping(leaky={"Tags": ""}), HERE)


def test_unknown_keys_and_crm_columns_are_named() -> None:
    raw = _mapping()
    raw["tables"]["leads"]["renames"] = {}
    with pytest.raises(MappingError, match=r"(?s)key tables\.leads\.renames: unknown key"):
        parse_mapping(raw, HERE)
    bad = _mapping(columns={"ID": "lead_id", "Created": "created_on"})
    with pytest.raises(MappingError, match=r"'created_on' is not a column of the CRM table leads"):
        parse_mapping(bad, HERE)


def test_a_column_cannot_be_both_dropped_and_used() -> None:
    with pytest.raises(MappingError, match=r"tables\.leads\.leaky: column\(s\) \['Src'\] are dropped and used"):
        parse_mapping(_mapping(leaky={"Src": "sales edit it later", "Tags": "set by sales"}), HERE)


def test_a_value_the_map_does_not_list_is_named_with_table_column_and_row() -> None:
    leads = _raw_leads()
    leads.loc[2, "Src"] = "Carrier pigeon"
    with pytest.raises(
        MappingError,
        match=r"table 'leads', column 'lead_source' \(source 'Src'\).*"
        r"\['Carrier pigeon'\].*row 3: 'Carrier pigeon'",
    ):
        _apply(_mapping(), leads)


def test_other_and_missing_fill_unlisted_and_absent_values() -> None:
    leads = _raw_leads()
    leads.loc[2, "Src"] = "Carrier pigeon"
    leads.loc[1, "Src"] = None
    mapping = _mapping()
    mapping["tables"]["leads"]["values"]["lead_source"] |= {"other": "partner", "missing": "organic_search"}
    mapped = _apply(mapping, leads)
    assert mapped.tables["leads"]["lead_source"].tolist() == ["paid_search", "organic_search", "partner"]


def test_a_date_that_does_not_match_its_format_is_named_with_its_row() -> None:
    leads = _raw_leads()
    leads.loc[1, "Created"] = "2025-01-04"
    with pytest.raises(
        MappingError,
        match=r"table 'leads', column 'created_at' \(source 'Created'\).*%d/%m/%Y.*"
        r"row 2: '2025-01-04'",
    ):
        _apply(_mapping(), leads)


def test_a_numeric_attribute_with_text_is_named() -> None:
    leads = _raw_leads()
    leads.loc[0, "Visits"] = "lots"
    with pytest.raises(MappingError, match=r"attribute 'visits' \(source 'Visits'\).*row 1: 'lots'"):
        _apply(_mapping(), leads)


def test_source_columns_the_mapping_does_not_account_for_are_refused_unless_ignored() -> None:
    leads = _raw_leads().assign(Phone="123")
    with pytest.raises(MappingError, match=r"table 'leads': source column\(s\) \['Phone'\] are not in the mapping"):
        _apply(_mapping(), leads)
    assert "Phone" not in _apply(_mapping(unmapped="ignore"), leads).attributes.columns


def test_a_named_source_column_that_is_absent_is_named() -> None:
    leads = _raw_leads().drop(columns=["Tags"])
    with pytest.raises(MappingError, match=r"table 'leads': source column\(s\) 'Tags' \(named in leaky\) not found"):
        _apply(_mapping(), leads)


def test_data_breaking_the_crm_contract_is_reported_by_the_schema_naming_the_row() -> None:
    mapping = _mapping()
    mapping["tables"]["leads"]["values"]["country"]["map"]["Germany"] = "Germany"  # not ISO-2
    with pytest.raises(CrmDataError, match=r"table 'leads', column 'country'.*lead_id='?101'?: 'Germany'"):
        _apply(mapping)


def _leads_only(**changes: Any) -> dict[str, Any]:
    raw = _mapping()
    del raw["tables"]["stage_history"]
    leads = raw["tables"]["leads"]
    del leads["columns"]["Created"], leads["dates"]["created_at"]
    leads["ignore"]["Created"] = "no dates in a leads-only export"
    raw |= {
        "snapshot_date": "2025-02-03",
        "target": {"column": "Won", "positive": [1, "yes"], "negative": [0, "no"], "stage": "Won"},
    }
    raw |= changes
    return raw


def test_leads_only_target_becomes_one_snapshot_and_a_stage_entry_per_positive_lead() -> None:
    mapping = parse_mapping(_leads_only(), HERE)
    leads = _raw_leads().assign(Won=["1", "0", "yes"])
    mapped = apply_mapping({"leads": leads}, mapping)
    assert mapped.leads_only
    crm = mapped.tables["leads"]
    assert (crm["created_at"] == pd.Timestamp("2025-02-03", tz="UTC")).all()
    assert crm["status"].tolist() == ["Won", "Open", "Won"]
    stages = mapped.tables["stage_history"]
    assert stages["lead_id"].tolist() == [101, 103] and set(stages["stage"]) == {"Won"}
    assert (stages["entered_at"] > pd.Timestamp("2025-02-03", tz="UTC")).all()
    assert mapped.report["leads_only"]["positives"] == 2


def test_leads_only_needs_a_snapshot_date_and_a_maturation_window_with_created_at_and_a_value_per_lead() -> None:
    with pytest.raises(MappingError, match="snapshot_date is required"):
        parse_mapping(_leads_only(snapshot_date=None), HERE)
    with_created = _leads_only()
    with_created["tables"]["leads"]["columns"]["Created"] = "created_at"
    del with_created["tables"]["leads"]["ignore"]["Created"]
    with pytest.raises(MappingError, match=r"target\.maturation_days is required when created_at is mapped"):
        parse_mapping(with_created, HERE)
    mapping = parse_mapping(_leads_only(), HERE)
    with pytest.raises(MappingError, match=r"target column 'Won': 1 row\(s\) have no value; e.g. row 2"):
        apply_mapping({"leads": _raw_leads().assign(Won=["1", None, "0"])}, mapping)


def test_env_variables_expand_with_defaults_and_an_unset_one_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LS_TEST_DIR", "/data")
    monkeypatch.delenv("LS_TEST_UNSET", raising=False)
    assert expand_env("${LS_TEST_DIR}/a.csv", "x") == "/data/a.csv"
    assert expand_env("${LS_TEST_UNSET:-../b.csv}", "x") == "../b.csv"
    with pytest.raises(MappingError, match=r"tables\.leads\.source: environment variable LS_TEST_UNSET is not set"):
        expand_env("${LS_TEST_UNSET}", "tables.leads.source")


def test_a_sql_source_table_name_is_checked_as_an_identifier() -> None:
    raw = _mapping()
    raw["tables"]["leads"]["source"] = {"url": "sqlite:///x.db", "table": "leads; drop table x"}
    with pytest.raises(MappingError, match=r"(?s)key tables\.leads\.source.*is not allowed"):
        parse_mapping(raw, HERE)


def test_files_round_trip_csv_parquet_and_sql(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _raw_leads().to_csv(tmp_path / "leads.csv", index=False)
    _raw_stages().to_parquet(tmp_path / "stages.parquet")
    raw = _mapping()
    raw["tables"]["leads"]["source"] = {"path": "${LS_TEST_DIR}/leads.csv"}
    raw["tables"]["stage_history"]["source"] = {"path": str(tmp_path / "stages.parquet")}
    path = tmp_path / "m.yaml"
    import yaml

    path.write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("LS_TEST_DIR", str(tmp_path))
    mapping = load_mapping(path)
    mapped = apply_mapping(read_sources(mapping), mapping)
    url = f"sqlite:///{tmp_path / 'crm.db'}"
    write_mapped(url, mapped)
    from pipelines.crm.db import make_engine, read_crm, read_table

    engine = make_engine(url)
    assert read_crm(engine)["leads"]["lead_id"].tolist() == [101, 102, 103]
    assert read_table(engine, ATTRIBUTES_TABLE)["occupation"].tolist()[0] == "Student"
    # the same database as a SQL source of another mapping
    sql = _mapping(
        source={"url": url, "table": "leads"},
        columns={"lead_id": "lead_id", "created_at": "created_at", "lead_source": "lead_source"},
        dates={},
        values={},
        attributes={},
        leaky={},
        ignore={},
        unmapped="ignore",
    )
    sql["tables"]["stage_history"]["source"] = {"path": str(tmp_path / "stages.parquet")}
    again = parse_mapping(sql, HERE)
    assert apply_mapping(read_sources(again), again).tables["leads"]["lead_source"].iloc[1] == "referral"


def test_a_missing_mapping_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(MappingError, match=r"mapping file .*nope\.yaml not found"):
        load_mapping(tmp_path / "nope.yaml")


def test_a_password_inline_in_a_source_url_is_refused_like_in_params() -> None:
    inline = {"url": "postgresql+psycopg://crm:hunter2@db/crm", "table": "leads"}
    with pytest.raises(MappingError, match=r"tables\.leads\.source.*holds a password.*\$\{ENV\}") as info:
        parse_mapping(_mapping(source=inline), HERE)
    assert "hunter2" not in str(info.value)
    # through the environment (or ~/.pgpass, or no password at all) it is accepted
    for url in ("postgresql+psycopg://crm:${CRM_PASSWORD}@db/crm", "postgresql+psycopg://crm@db/crm", "${CRM_URL}"):
        assert parse_mapping(_mapping(source={"url": url, "table": "leads"}), HERE).tables["leads"].source.url == url


# ----------------------------------------------------------------------------------------------------------------
# Ambiguities are refused, never guessed
# ----------------------------------------------------------------------------------------------------------------


def _undeclared_dates(created: list[str]) -> pd.DataFrame:
    leads = _raw_leads()
    leads["Created"] = created
    return leads


@pytest.mark.parametrize(
    ("created", "message"),
    [
        (
            ["03/01/2025", "04/01/2025", "05/01/2025"],
            r"ambiguous dates: every day and month is at most 12.*row 1: "
            r"'03/01/2025'",
        ),
        (["13/01/2025", "04/01/2025", "05/01/2025"], r"they read day first \(DD-MM\).*row 1: '13/01/2025'"),
        (
            ["13/01/2025", "01/14/2025", "05/01/2025"],
            r"mix two date readings: day first \(e.g. row 1: '13/01/2025'\) "
            r"and month first \(e.g. row 2: '01/14/2025'\)",
        ),
        (["2025-01-03", "Jan 4 2025", "2025-01-05"], r"not ISO 8601 dates.*row 2: 'Jan 4 2025'"),
        (["2025-01-03", "13/01/2025", "2025-01-05"], r"they read day first \(DD-MM\) \(e.g. row 2: '13/01/2025'\)"),
    ],
)
def test_dates_without_a_declared_format_must_be_iso_and_other_readings_are_named(
    created: list[str], message: str
) -> None:
    with pytest.raises(MappingError, match=r"table 'leads', column 'created_at' \(source 'Created'\): .*" + message):
        _apply(_mapping(dates={}), _undeclared_dates(created))


def test_iso_dates_need_no_declared_format() -> None:
    mapped = _apply(_mapping(dates={}), _undeclared_dates(["2025-01-03T09:15:00Z", "2025-01-04", "2025-01-05 11:30"]))
    assert mapped.tables["leads"]["created_at"].iloc[0] == pd.Timestamp("2025-01-03 09:15", tz="UTC")


def test_stage_entries_before_their_leads_creation_are_refused_with_rows() -> None:
    # the month-first reading of day-first data: 03/01 read as March 1st puts the lead after its won stage
    with pytest.raises(
        MappingError,
        match=r"table 'stage_history', column 'entered_at': 2 row\(s\) are dated before "
        r"their lead's creation.*row 1 \(stage_history_id=1, lead_id=101\): "
        r"2025-01-10 00:00 before created_at 2025-03-01 09:15",
    ):
        _apply(_mapping(dates={"created_at": "%m/%d/%Y %H:%M"}))


@pytest.mark.parametrize("value", ["yes", "TRUE", "1.0", "2"])
def test_target_values_outside_the_declared_sets_are_refused(value: str) -> None:
    raw = _leads_only(target={"column": "Won", "positive": [1], "negative": [0], "stage": "Won"})
    with pytest.raises(
        MappingError,
        match=rf"target column 'Won': 1 row\(s\) hold value\(s\) \['{value}'\] that are "
        rf"neither positive \['1'\] nor negative \['0'\]; e.g. row 3: '{value}'",
    ):
        apply_mapping({"leads": _raw_leads().assign(Won=["1", "0", value])}, parse_mapping(raw, HERE))


def test_a_value_both_positive_and_negative_is_refused() -> None:
    with pytest.raises(MappingError, match=r"value\(s\) \['1'\] are both positive and negative"):
        parse_mapping(_leads_only(target={"column": "Won", "positive": [1], "negative": [1, 0], "stage": "Won"}), HERE)


# ----------------------------------------------------------------------------------------------------------------
# Text ids, joins, derived date parts
# ----------------------------------------------------------------------------------------------------------------


def test_string_ids_are_refused_as_integers_and_kept_as_crm_id_with_ids_text() -> None:
    leads = _raw_leads().assign(ID=["00Q5e000001AbCdEAG", "00Q5e000001AbCdEAH", "1f3a"])
    stages = _raw_stages().assign(Lead=["00Q5e000001AbCdEAG", "00Q5e000001AbCdEAH"])
    mapping = parse_mapping(_mapping(), HERE)
    with pytest.raises(
        MappingError,
        match=r"column 'lead_id': 3 id\(s\) are not whole numbers; e.g. row 1: "
        r"'00Q5e000001AbCdEAG'.*ids: text",
    ):
        apply_mapping({"leads": leads, "stage_history": stages}, mapping)
    mapped = apply_mapping(
        {"leads": leads, "stage_history": stages}, parse_mapping({**_mapping(), "ids": "text"}, HERE)
    )
    ids = mapped.crm_ids.set_index("crm_id")["lead_id"]
    assert ids["00Q5e000001AbCdEAG"] != ids["00Q5e000001AbCdEAH"] and (ids > 0).all()
    assert mapped.tables["stage_history"]["lead_id"].tolist() == [ids["00Q5e000001AbCdEAG"], ids["00Q5e000001AbCdEAH"]]
    again = apply_mapping(
        {"leads": leads.iloc[::-1], "stage_history": stages}, parse_mapping({**_mapping(), "ids": "text"}, HERE)
    )
    assert again.crm_ids.set_index("crm_id")["lead_id"].to_dict() == ids.to_dict()  # stable across imports


def test_a_join_brings_a_label_column_by_key_and_a_doubled_key_is_refused() -> None:
    raw = _mapping()
    raw["tables"]["leads"]["joins"] = [{"source": {"path": "deals.csv"}, "by": {"ID": "Lead"}, "take": ["Won"]}]
    raw["tables"]["leads"]["ignore"]["Won"] = "brought for the check below"
    mapping = parse_mapping(raw, HERE)
    deals = pd.DataFrame({"Lead": ["103", "101"], "Won": ["yes", "no"]})
    frames = {"leads": _raw_leads(), "stage_history": _raw_stages(), "leads.joins.0": deals}
    assert apply_mapping(frames, mapping).report["rows"]["leads"] == 3
    raw["tables"]["leads"]["attributes"]["won_flag"] = {"column": "Won", "kind": "categorical"}
    del raw["tables"]["leads"]["ignore"]["Won"]
    attrs = apply_mapping(frames, parse_mapping(raw, HERE)).attributes.set_index("lead_id")["won_flag"]
    assert attrs[101] == "no" and pd.isna(attrs[102]) and attrs[103] == "yes"
    doubled = {**frames, "leads.joins.0": pd.concat([deals, deals.iloc[:1]])}
    with pytest.raises(
        MappingError,
        match=r"table 'leads', joins\[0\]: the joined source holds 1 key\(s\) of column "
        r"'Lead' more than once.*row 1: '103', row 3: '103'",
    ):
        apply_mapping(doubled, parse_mapping(raw, HERE))


def test_derived_date_parts_become_attributes() -> None:
    raw = _mapping(
        derived={
            "created_weekday": {"column": "created_at", "part": "weekday"},
            "created_month": {"column": "created_at", "part": "month"},
            "created_hour": {"column": "created_at", "part": "hour"},
        }
    )
    attrs = _apply(raw).attributes.set_index("lead_id")
    assert attrs["created_weekday"].tolist() == ["Fri", "Sat", "Sun"]  # 3-5 January 2025
    assert attrs["created_month"].tolist() == ["Jan"] * 3 and attrs["created_hour"].tolist() == [9.0, 10.0, 11.0]


def test_dated_target_keeps_creation_and_puts_the_flag_at_the_export() -> None:
    raw = _leads_only(
        target={"column": "Won", "positive": ["1"], "negative": ["0"], "stage": "Won", "maturation_days": 20}
    )
    leads = raw["tables"]["leads"]
    leads["columns"]["Created"] = "created_at"
    leads["dates"] = {"created_at": "%d/%m/%Y %H:%M"}
    del leads["ignore"]["Created"]
    mapped = apply_mapping({"leads": _raw_leads().assign(Won=["1", "0", "1"])}, parse_mapping(raw, HERE))
    assert mapped.dated_flag and not mapped.leads_only
    assert mapped.tables["leads"]["created_at"].iloc[0] == pd.Timestamp("2025-01-03 09:15", tz="UTC")
    assert (mapped.tables["stage_history"]["entered_at"] == pd.Timestamp("2025-02-04", tz="UTC")).all()
    assert mapped.label["maturation_days"] == 20 and mapped.report["dated_flag"]["censored_leads"] == 0
    late = _raw_leads().assign(
        Won=["1", "0", "1"], Created=["03/01/2025 09:15", "04/01/2025 10:00", "05/02/2025 11:30"]
    )
    with pytest.raises(MappingError, match=r"1 lead\(s\) are created after the export date.*row 3: '2025-02-05 11:30'"):
        apply_mapping({"leads": late}, parse_mapping(raw, HERE))


def test_an_order_column_orders_leads_without_dates_and_ties_are_refused() -> None:
    raw = _leads_only(order={"column": "Seq"})
    mapping = parse_mapping(raw, HERE)
    mapped = apply_mapping({"leads": _raw_leads().assign(Won=["1", "0", "1"], Seq=["30", "10", "20"])}, mapping)
    created = mapped.tables["leads"].set_index("lead_id")["created_at"]
    assert created[102] < created[103] < created[101]  # by Seq, not by row
    assert mapped.dated_flag and mapped.label["basis"] == "order" and mapped.label["maturation_days"] == 0
    assert (mapped.tables["stage_history"]["entered_at"] > created.max()).all()
    with pytest.raises(MappingError, match=r"order column 'Seq': 2 row\(s\) share a value.*row 1: '10', row 2: '10'"):
        apply_mapping({"leads": _raw_leads().assign(Won=["1", "0", "1"], Seq=["10", "10", "20"])}, mapping)
    with pytest.raises(MappingError, match="order needs a target column"):
        parse_mapping({**_mapping(), "order": {"column": "Seq"}}, HERE)
