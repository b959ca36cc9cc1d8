"""A whole nightly run of the demo explained: no reason contradicts its feature's declared business direction.

Every lead open on the demo's last day is scored by the demo model and explained with the reasons the registered
model returns (`explain`, the code behind `top_reasons`); each reason is then checked on its own, against the
declarations in pipelines/features/directions.py, and its words are checked for the slips sales complained about.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest
from conftest import DemoModel

from pipelines.features.build import features_as_of
from pipelines.features.directions import feature_direction
from pipelines.modeling import prepare_frame
from pipelines.registry.reasons import Reason, explain, reason_features

K = 3


@pytest.fixture(scope="module")
def nightly(demo_model: DemoModel) -> tuple[pd.DataFrame, list[list[Reason]], list[list[Reason]]]:
    """Features and reasons (k = 3 each way) of every lead open at the end of the demo history."""
    as_of = pd.Timestamp(demo_model.tables["activities"]["occurred_at"].max()).ceil("D")
    features = features_as_of(demo_model.tables, as_of, demo_model.feature_params)
    x = prepare_frame(features, demo_model.features, need_label=False)[[f.name for f in demo_model.features]]
    contrib = np.asarray(demo_model.booster.predict(x, pred_contrib=True), dtype=float)
    positive, negative = explain(contrib, x, reason_features(demo_model.features), K)
    return x, positive, negative


def _kinds(demo_model: DemoModel) -> dict[str, tuple[str, str]]:
    return {f.name: (f.family, f.kind) for f in demo_model.features}


@pytest.mark.slow
def test_no_reason_of_a_nightly_run_contradicts_its_declared_direction(
    demo_model: DemoModel, nightly: tuple[pd.DataFrame, list[list[Reason]], list[list[Reason]]]
) -> None:
    x, positive, negative = nightly
    kinds = _kinds(demo_model)
    assert len(x) > 1000, "the demo's last night should have thousands of open leads"
    declared = {+1: 0, -1: 0}
    for side, sign in ((positive, +1), (negative, -1)):
        for row in side:
            assert len(row) <= K
            for reason in row:
                assert reason.sign == sign and sign * reason.contribution > 0
                direction = feature_direction(reason.feature, *kinds[reason.feature])
                if direction:
                    value = float(reason.value)
                    # a present signal (above 0) only in its own direction, an absent one only against it
                    assert sign == (direction if value > 0 else -direction), (reason.feature, value, reason.text)
                    declared[sign] += 1
                if sign > 0:
                    missing = reason.value is None or (isinstance(reason.value, float) and math.isnan(reason.value))
                    assert not missing and str(reason.value) != "unknown", reason.text
    # the check has teeth: declared features carry many reasons on both sides
    assert declared[+1] > 100 and declared[-1] > 100, declared
    assert np.mean([bool(row) for row in positive]) > 0.9 and np.mean([bool(row) for row in negative]) > 0.9


@pytest.mark.slow
def test_the_reasons_of_a_nightly_run_read_as_plain_english(
    nightly: tuple[pd.DataFrame, list[list[Reason]], list[list[Reason]]],
) -> None:
    _, positive, negative = nightly
    pros = {r.text for row in positive for r in row}
    cons = {r.text for row in negative for r in row}
    texts = pros | cons
    assert not [
        t
        for t in texts
        if re.search(
            r"(?<![\d,.])1 [a-z -]*(activities|visits|contacts|changes|pieces|"
            r"signs|employees|opens|clicks|requests)\b",
            t,
        )
    ]
    assert not [t for t in texts if "_" in t or " via " in t or "  " in t]  # no raw codes
    assert not [t for t in pros if "unknown" in t or (t.startswith("no ") and "yet" in t)]
    assert not [
        t
        for t in cons
        if "never unsubscribed" in t
        or "no e-mail ever bounced" in t
        or t.startswith(("no unsubscribes", "no e-mail bounces"))
    ]
    assert not [
        t
        for t in pros
        if t.startswith(("unsubscribed", "had e-mails bounce", "no demo requests", "no pricing page visits"))
    ]
