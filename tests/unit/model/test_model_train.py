"""Train stage core on tiny frames: cold-start guard, monotone directions, models that learn, saved artifacts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from model_frames import FEATURES, train_params, weekly_frame

from pipelines.artifacts import load_booster, load_logreg, load_split, save_models
from pipelines.errors import BadInputError
from pipelines.modeling import ColdStartError, FeatureSpec, ModelInputError, monotone_directions, roc_auc
from pipelines.train import booster_predict, lgb_params, logreg_predict, train_models


def test_cold_start_refuses_and_says_how_many_there_are_and_are_needed() -> None:
    frame = weekly_frame()
    frame["label"] = 0
    frame.loc[:6, "label"] = 1

    with pytest.raises(ColdStartError) as caught:
        train_models(frame, FEATURES, train_params(min_positives=50), 30, 0)

    message = str(caught.value)
    assert "7 positive" in message and "at least 50" in message and "train.min_positives" in message
    assert isinstance(caught.value, BadInputError)  # the CLI maps it to exit code 2


def test_monotone_directions_follow_the_declared_business_directions_recency_and_velocity() -> None:
    infos = [
        *FEATURES,
        FeatureSpec("distinct_content_all", "numeric", "content"),
        FeatureSpec("n_email_bounce_7d", "numeric", "engagement"),
        FeatureSpec("days_since_email_click", "numeric", "recency"),
        FeatureSpec("days_since_stage_change", "numeric", "stage"),
        FeatureSpec("n_activities_last_14d", "numeric", "velocity"),
        FeatureSpec("n_activities_prior_14d", "numeric", "velocity"),
        FeatureSpec("activity_velocity_14d", "numeric", "velocity"),
    ]

    # fit, clicks, unsubscribes (never up), region, content, bounces (never up), days since a click (fewer: better),
    # days in the stage, recent activity, the activity before it, velocity
    assert monotone_directions(infos) == [0, 1, -1, 0, 1, -1, -1, 0, 1, 0, 1]
    assert "monotone_constraints" in lgb_params(train_params(), 0, monotone_directions(infos))
    assert "monotone_constraints" not in lgb_params(train_params(), 0, [0] * len(infos))


def test_unknown_excluded_feature_fails_loudly() -> None:
    with pytest.raises(ModelInputError, match="fit_scor"):
        train_models(weekly_frame(), FEATURES, train_params(exclude_features=("fit_scor",)), 30, 0)


@pytest.fixture(scope="module")
def trained() -> tuple[object, object]:
    frame = weekly_frame(n_leads=80)
    return frame, train_models(frame, FEATURES, train_params(), 30, 0)


def test_both_models_learn_the_signal_out_of_time(trained: tuple[object, object]) -> None:
    frame, result = trained
    from pipelines.modeling import assign_slices

    test = frame[assign_slices(frame, result.split) == "test"]  # type: ignore[union-attr]
    y = test["label"].to_numpy()

    assert roc_auc(y, booster_predict(result.booster, test)) > 0.7  # type: ignore[union-attr]
    assert roc_auc(y, logreg_predict(result.logreg, test, result.features)) > 0.7  # type: ignore[union-attr]
    assert result.report["monotone_increasing"] == ["n_email_click_7d"]  # type: ignore[union-attr]
    assert result.report["monotone_decreasing"] == ["n_unsubscribe_all"]  # type: ignore[union-attr]


def test_saved_models_predict_the_same(tmp_path: Path, trained: tuple[object, object]) -> None:
    frame, result = trained
    save_models(result, tmp_path)  # type: ignore[arg-type]

    booster = load_booster(tmp_path)
    logreg, features = load_logreg(tmp_path)

    assert (tmp_path / "booster.txt").read_text().startswith("tree")
    np.testing.assert_allclose(booster_predict(booster, frame), booster_predict(result.booster, frame))  # type: ignore[union-attr,arg-type]
    np.testing.assert_allclose(logreg_predict(logreg, frame, features), logreg_predict(result.logreg, frame, features))  # type: ignore[union-attr,arg-type]
    assert load_split(tmp_path) == result.split  # type: ignore[union-attr]


def test_booster_reimposes_its_category_levels(trained: tuple[object, object]) -> None:
    frame, result = trained
    reordered = frame.copy()  # type: ignore[union-attr]
    reordered["region"] = reordered["region"].cat.reorder_categories(["APAC", "NA", "EMEA"])

    np.testing.assert_allclose(booster_predict(result.booster, reordered), booster_predict(result.booster, frame))  # type: ignore[union-attr,arg-type]
