"""The report page: self-contained (no URL at all), every chart an inline SVG, values escaped, plain fallbacks."""

from __future__ import annotations

import re

import pandas as pd
from report_frames import report_params, tiny_page, two_by_two_rows

from pipelines.report import core, render

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
    html = render.table(
        pd.DataFrame({"a": [1234.5, float("nan")], "b": ["x", None]}), [("a", "A", render.num), ("b", "B", None)]
    )

    assert 'data-value="1234.5">1,234<' in html or 'data-value="1234.5">1,235<' in html
    assert 'data-value="nan">—<' in html and "<td></td>" in html
