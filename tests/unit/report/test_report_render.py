"""The report page: self-contained (no URL at all), every chart an inline SVG, values escaped, plain fallbacks; the
headline first, wording from params, the same bytes for the same inputs, optional sections only when given."""

from __future__ import annotations

import html
import re

import pandas as pd
import pytest
from report_frames import REPO, evaluate_metrics, report_params, tiny_page, two_by_two_rows

from pipelines.config import load_params
from pipelines.report import core, render
from pipelines.report.headline import MetricsInputError

#: Anything a browser could fetch: a URL scheme, a protocol-relative URL, or an attribute / CSS rule that loads
#: something other than a fragment of the page itself (SVG clip paths and markers refer to "#id").
FETCHABLE = re.compile(r"https?:|//[a-z0-9.-]+\.[a-z]{2,}|\bsrc\s*=|href\s*=\s*\"(?!#)|url\((?!#)|@import", re.I)


def test_the_page_names_no_url_and_inlines_every_chart_as_svg() -> None:
    page = tiny_page()

    assert FETCHABLE.findall(page) == []
    figures = re.findall(r'<figure class="chart" data-chart="([a-z_]+)">\s*<svg[^>]*viewBox="[^"]+"', page)
    assert sorted(figures) == ["agreement", "capture", "grades", "lift", "tradeoff"]
    assert page.count("<svg") == len(figures)
    assert "<?xml" not in page and "<!DOCTYPE svg" not in page and "<metadata" not in page


def test_without_a_nightly_run_the_section_says_so_plainly() -> None:
    page = tiny_page(nightly=None)

    assert 'id="no-nightly-run"' in page and "No nightly scoring run yet in sqlite:///data/scores.db" in page


def test_an_unreachable_sql_threshold_is_stated_and_grades_in_use_are_b_to_d() -> None:
    page = tiny_page()

    assert "No lead is predicted SQL (grade A)" in page and "B-C-D only" in page


def test_values_are_escaped() -> None:
    rows = two_by_two_rows()
    rows.loc[rows["lead_id"] == 2, "campaign"] = "<script>alert(1)</script> & Co"

    page = tiny_page(rows=rows)

    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; Co" in page


def test_examples_show_codes_and_reasons_in_words() -> None:
    page = tiny_page(rows=two_by_two_rows())

    assert "intern_student · marketing · outside the ideal profile" in page  # the engaged junior
    assert "c_level · executive · ideal profile" in page  # the quiet senior buyer
    assert "VP-level title" in page and "no pricing page visits yet" in page


def test_the_nightly_section_renders_a_run() -> None:
    latest = (
        two_by_two_rows()
        .loc[lambda f: f["snapshot_at"] == f["snapshot_at"].max()]
        .drop(columns=["snapshot_at", "label"])
        .assign(reasons_positive="VP-level title", reasons_negative="")
    )
    run = {
        "run_id": "r7",
        "as_of": pd.Timestamp("2026-11-20 02:00", tz="UTC"),
        "model_name": "lead-scoring",
        "model_version": "3",
        "status": "drift_warning",
        "psi_max": 0.31,
        "psi_max_feature": "n_web_visit_30d",
    }

    page = tiny_page(nightly=core.nightly_section(latest, run, report_params()))

    assert "Run <code>r7</code> as of 2026-11-20 02:00 UTC" in page and "warned of drift" in page
    assert 'id="no-nightly-run"' not in page
    assert FETCHABLE.findall(page) == []


def test_numbers_carry_a_sort_value_and_missing_ones_show_a_dash() -> None:
    out = render.table(
        pd.DataFrame({"a": [1234.5, float("nan")], "b": ["x", None]}), [("a", "A", render.num), ("b", "B", None)]
    )

    assert 'data-value="1234.5">1,234<' in out or 'data-value="1234.5">1,235<' in out
    assert 'data-value="nan">—<' in out and '<td data-col="b" data-label="B"></td>' in out


def _visible_text(page: str) -> str:
    """The page's prose: no style, script or SVG, tags dropped, whitespace collapsed."""
    body = re.sub(r"<(style|script|svg)\b.*?</\1>", " ", page, flags=re.S)
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", body)))


def test_the_page_opens_with_the_headline_against_the_best_rule_and_its_interval() -> None:
    page = tiny_page()

    body = page[page.index("<body>") :]
    assert re.match(r"<body>\s*<h1>[^<]*</h1>\s*<p class=\"headline\" id=\"headline\">", body)
    headline = _visible_text(body[body.index('id="headline"') : body.index("</p>", body.index('id="headline"'))])
    assert "best standard rule's MQLs (decayed_30d: 5,792 open leads" in headline
    assert "1.13x as many SQLs" in headline and "(90% interval [1.06x, 1.20x])" in headline  # evaluate's level
    assert "3.5% of them reach SQL within 30 days, against 3.1% of the rule's MQLs" in headline  # 3.07% x 1.13
    detail = _visible_text(page[page.index('id="headline-detail"') : page.index('id="provenance"')])
    assert "200 bootstrap resamples of whole accounts" in detail and "1.37x as many [1.25x, 1.50x]" in detail


def test_without_rule_variants_the_headline_compares_with_the_history_rule() -> None:
    page = tiny_page(metrics=evaluate_metrics(240, best=None))

    headline = _visible_text(page[page.index('id="headline"') : page.index('id="headline-detail"')])
    assert "the rule MQLs (the history's rule: 6,735 open leads" in headline and "1.37x as many SQLs" in headline
    assert 'id="standard-rules"' not in page


def test_the_standard_rule_table_highlights_the_best_and_gives_the_models_ratio_vs_each() -> None:
    page = tiny_page()

    table = page[page.index('id="rule-variants"') : page.index("</table>", page.index('id="rule-variants"'))]
    rows = re.findall(r"<tr( class=\"best\")?><td[^>]*>([^<]*)</td>", table)
    assert rows == [("", "the history&#39;s rule"), (' class="best"', "decayed_30d (best)")]
    assert 'data-value="1.372">1.37x<' in table and 'data-value="1.13">1.13x<' in table


def test_metrics_of_other_test_rows_are_refused() -> None:
    with pytest.raises(MetricsInputError, match=r"describes 99 test rows but the test slice .* holds 240"):
        tiny_page(metrics=evaluate_metrics(99))


def test_the_wording_follows_the_interval_level_and_the_snapshot_cadence() -> None:
    params = load_params(REPO / "params.yaml")
    params = params.model_copy(
        update={
            "report": report_params(ci_level=0.8),
            "features": params.features.model_copy(update={"cadence_days": 14}),
        }
    )

    text = _visible_text(tiny_page(params=params))

    assert "80% interval" in text and "95% interval" not in text
    assert "2 fortnightly snapshots" in text and "240 lead-snapshots of 120 open leads" in text
    assert "weekly" not in text and "lead-weeks" not in text


def test_the_same_inputs_give_the_same_bytes() -> None:
    """No clock in the page and no random ids in its SVG: DVC sees a new page only when a figure changes."""
    rows = two_by_two_rows()

    first, second = tiny_page(rows=rows), tiny_page(rows=rows)

    assert first == second
    assert "Generated" not in first and "CRM data as of 2026-07-19 23:00 UTC" in first


def test_the_backtest_and_plan_sections_appear_only_when_given_after_the_headline() -> None:
    rows = two_by_two_rows()
    plain = tiny_page(rows=rows)
    assert 'id="backtest"' not in plain and 'id="plan"' not in plain
    trend = render.ExtraSection(
        title="Did the scores come true?",
        summary="The last 2 runs <b>converted</b> as predicted.",
        tables=[
            render.table_view(
                pd.DataFrame({"run": ["r1", "r2"], "obs_exp": [0.97, 1.04]}),
                [("run", "run", None), ("obs_exp", "observed / expected", render.ratio)],
            )
        ],
    )
    plan = render.ExtraSection(title="How many MQLs a sales target needs", summary="120 MQLs a week.")

    page = tiny_page(rows=rows, backtest=trend, plan=plan)

    assert page.index('id="headline"') < page.index('id="backtest"') < page.index('id="plan"')
    assert page.index('id="plan"') < page.index('id="standard-rules"')
    assert "The last 2 runs &lt;b&gt;converted&lt;/b&gt; as predicted." in page  # escaped like every value
    assert 'data-value="1.04">1.04x<' in page and "120 MQLs a week." in page
