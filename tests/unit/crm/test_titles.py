"""The job-title parser: seniority and department from messy free text, and its column-wise wrapper."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.crm import titles
from pipelines.crm.titles import DEPARTMENTS, SENIORITIES, parse_title, parse_titles


@pytest.mark.parametrize(
    ("title", "expected"),
    [
        # abbreviations
        ("VP Mktg", ("vp", "marketing")),
        ("V.P. Sales", ("vp", "sales")),
        ("SVP Sales", ("vp", "sales")),
        ("Vice President of Sales", ("vp", "sales")),
        ("Sr. Manager, Demand Gen", ("manager", "marketing")),
        ("Sr Dir Mktg", ("director", "marketing")),
        ("Dir. of Engineering", ("director", "engineering")),
        ("Engineering Mgr", ("manager", "engineering")),
        ("SDR", ("individual", "sales")),
        # C-level, spelled out or not
        ("cto", ("c_level", "engineering")),
        ("Chief Executive Officer", ("c_level", "executive")),
        ("Chief Marketing Officer", ("c_level", "marketing")),
        ("Chief Information Officer", ("c_level", "it")),
        ("CFO", ("c_level", "finance")),
        ("Co-Founder", ("c_level", "executive")),
        ("Managing Director", ("c_level", "executive")),
        # typos repaired against the keyword vocabulary
        ("Markting Manager", ("manager", "marketing")),
        ("Directr of Finance", ("director", "finance")),
        ("Saels Manager", ("manager", "sales")),
        # phrases and departments
        ("Head of IT", ("director", "it")),
        ("Head of People", ("director", "hr")),
        ("Account Executive", ("individual", "sales")),
        ("Business Development Representative", ("individual", "sales")),
        ("Supply Chain Manager", ("manager", "operations")),
        ("General Manager", ("director", "executive")),
        ("Software Engineer", ("individual", "engineering")),
        ("HR Generalist", ("individual", "hr")),
        ("Financial Analyst", ("individual", "finance")),
        # interns and students win over any other seniority keyword
        ("Marketing intern", ("intern_student", "marketing")),
        ("Intern, Sales", ("intern_student", "sales")),
        ("Student", ("intern_student", "other")),
        # nothing recognisable: an individual in another department
        ("Teacher", ("individual", "other")),
        ("Director", ("director", "other")),
    ],
)
def test_parse_title_reads_seniority_and_department_from_messy_titles(title: str, expected: tuple[str, str]) -> None:
    assert parse_title(title) == expected


@pytest.mark.parametrize(
    ("title", "expected"),
    [
        ("Internal Audit Manager", ("manager", "other")),  # "internal" is not a typo of "intern"
        ("Senior Internal Communications Manager", ("manager", "marketing")),
        ("Sales Trainer", ("individual", "sales")),  # "trainer" is not a typo of "trainee"
        ("Producer", ("individual", "other")),  # nor "producer" of "product"
    ],
)
def test_parse_title_does_not_repair_real_words_into_keywords_of_another_meaning(
    title: str, expected: tuple[str, str]
) -> None:
    assert parse_title(title) == expected


@pytest.mark.parametrize("title", ["VP Mktg", "Head of IT", "Sr. Manager, Demand Gen", "Markting Manager", "cto"])
@pytest.mark.parametrize("case", [str.upper, str.lower, str.title, lambda s: f"  {s}  "])
def test_parse_title_ignores_case_and_surrounding_space(title: str, case) -> None:  # type: ignore[no-untyped-def]
    assert parse_title(case(title)) == parse_title(title)


@pytest.mark.parametrize("title", [None, "", "   ", "\t\n", np.nan, 42])
def test_parse_title_gives_unknown_for_missing_empty_or_non_text(title: object) -> None:
    assert parse_title(title) == ("unknown", "unknown")  # type: ignore[arg-type]


def test_parse_title_answers_only_known_labels() -> None:
    for title in ["VP Mktg", "Wizard of Oz", "???", "12345", "Chief Happiness Officer & Co"]:
        seniority, department = parse_title(title)
        assert seniority in SENIORITIES
        assert department in DEPARTMENTS


def test_parse_titles_keeps_the_index_and_parses_nan_as_unknown() -> None:
    column = pd.Series(["VP Mktg", None, np.nan, "cto", "VP Mktg", ""], index=[10, 20, 30, 40, 50, 60])

    parsed = parse_titles(column)

    expected = pd.DataFrame(
        {
            "seniority": pd.Categorical(
                ["vp", "unknown", "unknown", "c_level", "vp", "unknown"], categories=SENIORITIES
            ),
            "department": pd.Categorical(
                ["marketing", "unknown", "unknown", "engineering", "marketing", "unknown"], categories=DEPARTMENTS
            ),
        },
        index=[10, 20, 30, 40, 50, 60],
    )
    pd.testing.assert_frame_equal(parsed, expected)


def test_parse_titles_has_all_categories_in_canonical_order_even_when_unused() -> None:
    parsed = parse_titles(pd.Series(["cto"]))

    assert list(parsed["seniority"].cat.categories) == list(SENIORITIES)
    assert list(parsed["department"].cat.categories) == list(DEPARTMENTS)
    assert not parsed["seniority"].cat.ordered


@pytest.mark.parametrize("dtype", [object, "string", "str", "category"])
def test_parse_titles_accepts_any_text_dtype(dtype: object) -> None:
    column = pd.Series(["VP Mktg", None, "Head of IT"], dtype=dtype)  # type: ignore[call-overload]

    parsed = parse_titles(column)

    assert parsed["seniority"].tolist() == ["vp", "unknown", "director"]
    assert parsed["department"].tolist() == ["marketing", "unknown", "it"]


@pytest.mark.parametrize("column", [pd.Series([], dtype=object), pd.Series([None, np.nan], dtype=object)])
def test_parse_titles_handles_empty_and_all_missing_columns(column: pd.Series) -> None:
    parsed = parse_titles(column)

    assert len(parsed) == len(column)
    assert (parsed["seniority"] == "unknown").all()
    assert (parsed["department"] == "unknown").all()
    assert list(parsed["seniority"].cat.categories) == list(SENIORITIES)


def test_parse_titles_parses_each_distinct_title_once(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[object] = []

    def counting(title: object) -> tuple[str, str]:
        seen.append(title)
        return parse_title(title)  # type: ignore[arg-type]

    monkeypatch.setattr(titles, "parse_title", counting)
    column = pd.Series(["VP Mktg", "cto", None] * 1000)

    parsed = parse_titles(column)

    assert sorted(seen) == ["VP Mktg", "cto"]
    assert parsed["seniority"].value_counts()[["vp", "c_level", "unknown"]].tolist() == [1000, 1000, 1000]
