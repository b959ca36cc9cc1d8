"""The report's pure core on hand-made test rows: the 2x2, intervals, curves, leakage flags, examples and mixes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from report_frames import many_leads_rows, report_params, thresholds, two_by_two_rows

from pipelines.config import LeakageParams
from pipelines.report import core


def _holdout(rows: pd.DataFrame, weeks: float = 2.0) -> core.HoldoutRows:
    return core.HoldoutRows.from_rows(rows, weeks)


def test_two_by_two_counts_each_cell_its_rows_leads_sqls_and_conversion() -> None:
    table = core.agreement_table(_holdout(two_by_two_rows()), report_params(bootstrap=0), seed=0).set_index("key")

    assert table["rows"].to_dict() == {"both": 2, "rule_only": 2, "model_only": 2, "neither": 2}
    assert table["leads"].to_dict() == {"both": 1, "rule_only": 1, "model_only": 1, "neither": 1}
    assert table["sqls"].to_dict() == {"both": 1, "rule_only": 0, "model_only": 2, "neither": 0}
    assert table.loc["both", "conversion"] == 0.5 and table.loc["model_only", "conversion"] == 1.0
    assert table["share_of_sqls"].to_dict() == pytest.approx(
        {"both": 1 / 3, "rule_only": 0, "model_only": 2 / 3, "neither": 0}
    )
    assert table["per_week"].to_dict() == {"both": 1.0, "rule_only": 1.0, "model_only": 1.0, "neither": 1.0}
    assert table["ci_low"].isna().all()  # bootstrap 0: no intervals, not fake ones


def test_conversion_intervals_resample_leads_not_rows() -> None:
    # one lead in group 0 with rows 1,0,0,0: resampling leads always gives 1/4; resampling rows would not
    lead_id = np.r_[np.full(4, 1), np.arange(2, 50)]
    y = np.r_[1, 0, 0, 0, np.zeros(48, dtype=int)]
    codes = np.r_[np.zeros(4, dtype=int), np.full(48, -1)]

    lo, hi = core.rate_intervals(lead_id, y, codes, 1, bootstrap=100, ci_level=0.95, seed=1)

    assert lo[0] == hi[0] == 0.25


def test_conversion_intervals_cover_the_estimate_and_narrow_with_more_leads() -> None:
    params = report_params(bootstrap=200)
    small = core.agreement_table(_holdout(many_leads_rows(60, seed=3)), params, seed=0).set_index("key")
    large = core.agreement_table(_holdout(many_leads_rows(600, seed=3)), params, seed=0).set_index("key")

    for table in (small, large):
        inside = (table["ci_low"] <= table["conversion"]) & (table["conversion"] <= table["ci_high"])
        assert inside.all()
    width = lambda t: (t["ci_high"] - t["ci_low"]).loc["neither"]  # noqa: E731
    assert width(large) < width(small)


def test_lift_and_capture_curves_end_at_all_sqls_and_lift_one() -> None:
    gains = core.gains_curves(_holdout(many_leads_rows(100)), points=11)

    last = gains.iloc[-1]
    assert last["share_of_leads"] == 1.0 and last["model"] == pytest.approx(1.0) and last["rules"] == pytest.approx(1.0)
    assert last["model_lift"] == pytest.approx(1.0)
    assert np.isnan(gains["model_lift"].iloc[0])  # share 0: lift undefined, not a division by zero
    assert (np.diff(gains["model"]) >= 0).all()


def test_operating_points_give_volumes_per_week_and_expected_and_observed_sqls() -> None:
    points = {p.name: p for p in core.operating_points(_holdout(two_by_two_rows(), weeks=2.0))}

    assert points["rule MQLs"].leads_per_week == 2.0  # leads 1 and 2, both weeks
    assert points["rule MQLs"].observed_sqls_per_week == 0.5
    assert points["rule MQLs"].expected_sqls_per_week == pytest.approx((0.6 + 0.1) * 2 / 2)
    assert points["model MQL and above"].leads_per_week == 2.0  # leads 1 and 3
    assert points["model SQL and above"].leads_per_week == 0.0  # the SQL threshold is unreachable


def test_leakage_flags_too_loose_too_narrow_and_too_few() -> None:
    leakage = LeakageParams(min_mqls=10, too_loose_below=0.02, too_narrow_above=0.25)

    assert core.leakage_flag(100, 0.01, leakage).startswith("too loose")
    assert core.leakage_flag(100, 0.30, leakage).startswith("too narrow")
    assert core.leakage_flag(100, 0.10, leakage) == ""
    assert core.leakage_flag(9, 0.01, leakage) == "too few MQLs"
    assert core.leakage_flag(100, float("nan"), leakage) == "too few MQLs"


def test_leakage_per_group_measures_rule_mqls_and_the_sqls_they_missed() -> None:
    rows = two_by_two_rows()
    params = report_params(bootstrap=0, leakage={"min_mqls": 2, "too_loose_below": 0.2, "too_narrow_above": 0.6})

    table = core.leakage_table(_holdout(rows), "region", params, seed=0).set_index("region")

    # NA: leads 1 (rule MQL, 1 SQL of 2 rows) and 2 (rule MQL, no SQL): 1 of 4 MQL rows converts
    assert table.loc["NA", "rule_mql_rows"] == 4 and table.loc["NA", "mql_to_sql"] == 0.25
    assert table.loc["NA", "leakage"] == 0.75 and table.loc["NA", "flag"] == ""
    assert table.loc["NA", "sqls_missed_by_rules"] == 0.0
    # EMEA: no rule MQL, 2 SQLs (lead 3) that the rules never qualified
    assert table.loc["EMEA", "rule_mql_rows"] == 0 and table.loc["EMEA", "flag"] == "too few MQLs"
    assert table.loc["EMEA", "sqls_missed_by_rules"] == 1.0
    assert table.loc["EMEA", "model_mql_to_sql"] == 1.0


def test_leakage_table_flags_a_loose_campaign() -> None:
    rows = two_by_two_rows()
    params = report_params(bootstrap=0, leakage={"min_mqls": 2, "too_loose_below": 0.3, "too_narrow_above": 0.9})

    table = core.leakage_table(_holdout(rows), "campaign", params, seed=0).set_index("campaign")

    assert table.loc["Spring webinar", "flag"].startswith("too loose")
    assert table.index[0] == "Spring webinar"  # sorted by rule-MQL volume


def test_disagreement_examples_pick_the_engaged_junior_and_the_quiet_senior_one_row_per_lead() -> None:
    rule_only, model_only = core.disagreement_examples(_holdout(two_by_two_rows()), n=5)

    assert rule_only["lead_id"].tolist() == [2] and rule_only["seniority"].iloc[0] == "intern_student"
    assert rule_only["snapshot_at"].iloc[0] == pd.Timestamp("2026-07-13", tz="UTC")  # its latest week
    assert model_only["lead_id"].tolist() == [3] and model_only["seniority"].iloc[0] == "c_level"
    for frame in (rule_only, model_only):
        assert set(frame.columns) <= {*core.EXAMPLE_COLUMNS, "rules_fired"}


def test_disagreement_examples_rank_by_rule_score_and_by_probability() -> None:
    rows = many_leads_rows(200)
    rule_only, model_only = core.disagreement_examples(_holdout(rows), n=3)

    assert len(rule_only) == 3 and rule_only["rule_score"].is_monotonic_decreasing
    assert len(model_only) == 3 and model_only["probability"].is_monotonic_decreasing
    assert (~model_only["lead_id"].duplicated()).all()


def test_threshold_notes_say_plainly_that_an_unreachable_sql_threshold_leaves_grade_a_empty() -> None:
    notes = {n.stage: n for n in core.threshold_notes(thresholds(sql=float("inf")))}

    assert "unreachable" in notes["SQL"].note and "grade A is empty" in notes["SQL"].note
    assert "30%" in notes["SQL"].note  # the precision policy that could not be met
    assert notes["MQL"].note.startswith("probability >= 0.3000")


def test_threshold_notes_say_when_volumes_count_new_hand_offs() -> None:
    standing = {n.stage: n.note for n in core.threshold_notes(thresholds(sql=0.7))}
    fitted = thresholds(sql=0.7)
    new = {
        n.stage: n.note
        for n in core.threshold_notes(type(fitted)(**{**fitted.__dict__, "report": {**fitted.report, "volume": "new"}}))
    }

    assert "150.0 leads per week" in standing["SAL"] and "as many leads as the rule MQLs" in standing["MQL"]
    assert "150.0 new hand-offs per week" in new["SAL"] and "the rule's new MQLs" in new["MQL"]


def test_grade_mix_with_no_sql_threshold_has_an_empty_grade_a() -> None:
    rows = two_by_two_rows()
    grades = core.grade_mix(rows["grade"], rows["label"].to_numpy(), weeks=2.0).set_index("grade")

    assert grades.loc["A", "rows"] == 0 and np.isnan(grades.loc["A", "conversion"])
    assert grades["rows"].sum() == len(rows) and grades["share"].sum() == pytest.approx(1.0)
    assert grades.loc["B", "conversion"] == 0.5  # lead 1 (p 0.6)


def test_fit_readiness_sizes_the_nurture_group() -> None:
    fit = np.array([True, True, True, False, False])
    ready = np.array([True, False, False, True, False])
    y = np.array([1, 0, 1, 0, 0])

    table = core.fit_readiness(fit, ready, y, weeks=2.0).set_index("key")

    assert table.loc["nurture", "rows"] == 2 and table.loc["nurture", "per_week"] == 1.0
    assert table.loc["nurture", "share"] == pytest.approx(0.4) and table.loc["nurture", "conversion"] == 0.5
    assert table["rows"].sum() == 5


def test_holdout_section_bundles_every_table() -> None:
    section = core.holdout_section(_holdout(many_leads_rows(80)), report_params(), seed=0)

    assert section.snapshots == 2 and section.rows == 160 and section.leads == 80
    assert section.period == ("2026-07-06", "2026-07-13")
    assert len(section.agreement) == 4 and len(section.leakage_region) == 3


def test_missing_columns_and_empty_rows_are_clear_errors() -> None:
    with pytest.raises(core.ReportInputError, match="campaign"):
        core.HoldoutRows.from_rows(two_by_two_rows().drop(columns="campaign"), 2.0)
    with pytest.raises(core.ReportInputError, match="no test rows"):
        core.HoldoutRows.from_rows(two_by_two_rows().iloc[:0], 2.0)


def _nightly_rows() -> pd.DataFrame:
    base = (
        two_by_two_rows()
        .loc[lambda f: f["snapshot_at"] == f["snapshot_at"].max()]
        .drop(columns=["snapshot_at", "label"])
    )
    return base.assign(
        reasons_positive=["VP-level title", "", "C-level title", ""],
        reasons_negative=["", "intern or student title", "", ""],
    )


def test_nightly_section_counts_the_run_without_outcomes() -> None:
    section = core.nightly_section(_nightly_rows(), {"run_id": "r1"}, report_params())

    assert section.agreement.set_index("key")["leads"].to_dict() == {
        "both": 1,
        "rule_only": 1,
        "model_only": 1,
        "neither": 1,
    }
    assert "conversion" not in section.grades.columns and "conversion" not in section.fit_ready.columns
    assert section.rule_only["lead_id"].tolist() == [2] and section.model_only["lead_id"].tolist() == [3]
    assert section.by_region.set_index("region")["model_mqls"].to_dict() == {"EMEA": 1, "NA": 1}


def test_holdout_rows_resample_accounts_given_as_the_cluster_column() -> None:
    rows = two_by_two_rows()
    rows[core.CLUSTER] = 7  # every lead of one account
    test = _holdout(rows)
    assert (test.cluster == 7).all()
    # one account: every resample is the whole slice, so the interval collapses onto the estimate
    codes = np.zeros(len(test.y), dtype=int)
    lo, hi = core.rate_intervals(test.cluster, test.y, codes, 1, bootstrap=50, ci_level=0.95, seed=1)
    assert lo[0] == hi[0] == test.y.mean()
    by_lead = _holdout(two_by_two_rows())
    assert (by_lead.cluster == -1 - by_lead.lead_id).all()  # no column: each lead its own cluster
