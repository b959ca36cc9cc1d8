"""The backtest trend and the plan as report sections: what they say, their tables, and what they say without data."""

from __future__ import annotations

import pytest
from report_frames import REPO, backtest_rows, extra_sections, plan_rows, report_params, tiny_page, two_by_two_rows

from pipelines.backtest.core import backtest_trend
from pipelines.config import ParamsError, load_params
from pipelines.plan.core import PERIOD_DAYS
from pipelines.report import core, render

PARAMS = load_params(REPO / "params.yaml")


def cells(table: render.Table, column: int) -> list[render.TableCell]:
    return [row.cells[column] for row in table.rows]


def test_the_trend_table_lists_the_newest_run_first_flags_it_and_sorts_by_value() -> None:
    trend = backtest_trend(backtest_rows())

    section = render.backtest_extra(trend, PARAMS.backtest, 30)

    assert section.summary == trend.headline and section.summary.startswith("The run of 2026-10-12")
    (table,) = section.tables
    assert [c.text for c in cells(table, 0)] == ["2026-10-12", "2026-09-14"]
    assert [r.css_class for r in table.rows] == ["flagged", ""]
    assert [c.text for c in cells(table, 7)] == ["degraded: recalibrate", "ok"]  # no recommendation: the status
    auc = cells(table, 3)
    assert auc[0].text == "0.812 (0.790-0.830)" and auc[0].sort == "0.812"  # the leading number sorts
    assert cells(table, 0)[0].sort is None and cells(table, 1)[0].sort is None  # a date and a version are text
    assert [c.sort for c in cells(table, 4)] == ["1.41", "0.97"]
    assert section.notes and "1 of these runs left the band of 0.8 to 1.25" in section.notes[0]
    assert "30-day horizon" in section.paragraphs[0]


def test_runs_inside_the_band_carry_no_warning() -> None:
    section = render.backtest_extra(backtest_trend(backtest_rows(degraded_newest=False)), PARAMS.backtest, 30)

    assert section.notes == [] and all(r.css_class == "" for r in section.tables[0].rows)


@pytest.mark.parametrize("trend", [None, backtest_trend(backtest_rows().iloc[:0])])
def test_without_a_backtest_the_section_says_so_in_one_sentence(trend: object) -> None:
    section = render.backtest_extra(trend, PARAMS.backtest, 45)  # type: ignore[arg-type]

    assert section.tables == () and section.paragraphs == ()
    assert "45-day horizon" in section.summary and section.summary.count(". ") == 0


def test_the_plan_section_keeps_the_total_last_and_says_where_the_target_comes_from() -> None:
    target = core.plan_target(PARAMS.report, PARAMS.calibrate.thresholds)

    section = render.plan_extra(plan_rows(), target, "sqlite:///x.db")

    assert section.summary.startswith("25 SQLs a week need about 875 new leads")
    (table,) = section.tables
    assert [c.text for c in cells(table, 0)] == ["Webinar", "Trade show", "total"]
    assert [r.css_class for r in table.rows] == ["", "", "total"]
    assert [c.sort for c in cells(table, 4)] == ["375.0", "500.0", "875.0"]
    assert [c.sort for c in cells(table, 3)] == ["0.04", "0.02", "nan"]  # the total has no yield of its own
    assert "capacity of 25 hand-offs a week" in section.paragraphs[0]
    assert section.notes == ("campaigns without history take the rates of all",)


def test_without_a_nightly_run_the_plan_says_so_in_one_sentence() -> None:
    target = core.plan_target(PARAMS.report, PARAMS.calibrate.thresholds)

    section = render.plan_extra(None, target, "sqlite:///x.db")

    assert section.tables == () and "No nightly run yet in sqlite:///x.db" in section.summary
    assert "25 SQLs a week" in section.summary


def test_the_plan_target_is_the_sql_capacity_scaled_to_the_period_unless_set() -> None:
    thresholds = PARAMS.calibrate.thresholds
    weekly = thresholds.SQL.leads_per_week
    assert weekly is not None and thresholds.SQL.policy == "capacity"

    week = core.plan_target(report_params(plan_target_sql=None, plan_per="week"), thresholds)
    month = core.plan_target(report_params(plan_target_sql=None, plan_per="month"), thresholds)
    fixed = core.plan_target(report_params(plan_target_sql=40, plan_per="quarter"), thresholds)

    assert (week.sql, week.per, week.from_capacity) == (weekly, "week", True)
    assert month.sql == pytest.approx(weekly * PERIOD_DAYS["month"] / 7) and month.per == "month"
    assert (fixed.sql, fixed.per, fixed.from_capacity) == (40.0, "quarter", False)
    plan = render.plan_extra(None, month, "db")
    assert f"{month.sql:,.1f} SQLs a month" in plan.summary


def test_a_null_target_without_an_sql_capacity_is_refused_when_params_load(tmp_path: object) -> None:
    import yaml

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["calibrate"]["thresholds"]["SQL"] = {"policy": "precision", "min_precision": 0.3}
    raw["report"]["plan_target_sql"] = None
    path = tmp_path / "params.yaml"  # type: ignore[operator]
    path.write_text(yaml.safe_dump(raw))

    with pytest.raises(ParamsError, match=r"report\.plan_target_sql: null means the SQL list's weekly capacity"):
        load_params(path)
    raw["report"]["plan_target_sql"] = 30
    path.write_text(yaml.safe_dump(raw))
    assert load_params(path).report.plan_target_sql == 30


def test_both_sections_follow_the_headline_on_the_page() -> None:
    page = tiny_page(rows=two_by_two_rows(), **extra_sections())

    assert page.index('id="headline"') < page.index('id="backtest"') < page.index('id="plan"')
    assert page.index('id="plan"') < page.index('id="standard-rules"')
    assert 'id="backtest-trend"' in page and '<tr class="flagged">' in page and '<tr class="total">' in page
    assert 'data-label="MQLs per week (95% CI)" class="num" data-value="350.0">350 (320-380)<' in page
