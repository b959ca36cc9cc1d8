"""Purged expanding-window CV (folds, rounds with a floor) and the seeded Optuna search over it."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from model_frames import FEATURES, train_params, weekly_frame

from pipelines.train import lgb_params, train_models
from pipelines.tuning import cross_validate, purged_folds, sample_leads, tune

HORIZON = 30
NAMES = [f.name for f in FEATURES]


def _folds(frame: pd.DataFrame, n: int = 3, gap: int = HORIZON) -> list:
    return purged_folds(frame["snapshot_at"], frame["label"].to_numpy(), None, n, gap, 0)


def test_folds_expand_in_time_and_purge_label_windows_reaching_the_validation_block() -> None:
    frame = weekly_frame()
    at = frame["snapshot_at"]
    folds = _folds(frame)

    assert len(folds) == 3
    for fold in folds:
        valid_first = at.iloc[fold.valid].min()
        # every training row's label window (t, t + horizon] ends before the validation block starts
        assert (at.iloc[fold.train] + pd.Timedelta(days=HORIZON) < valid_first).all()
        purged = (at < valid_first) & ~np.isin(np.arange(len(frame)), fold.train)
        assert fold.purged_rows == int(purged.sum()) > 0
        assert fold.purged_positives == int(frame.loc[purged, "label"].sum())
    assert [len(f.train) for f in folds] == sorted(len(f.train) for f in folds)  # expanding window
    blocks = [at.iloc[f.valid] for f in folds]
    assert all(a.max() < b.min() for a, b in itertools.pairwise(blocks))


def test_one_snapshot_date_gets_stratified_folds() -> None:
    frame = weekly_frame(n_leads=600, n_weeks=1)
    folds = _folds(frame)

    assert len(folds) == 3 and all(f.purged_rows == 0 for f in folds)
    rates = [frame["label"].to_numpy()[f.valid].mean() for f in folds]
    assert max(rates) - min(rates) < 0.02


def test_rounds_are_the_mean_early_stopped_round_floored_at_min_rounds() -> None:
    frame = weekly_frame(n_leads=80)
    folds = _folds(frame)
    params = train_params(max_rounds=200, min_rounds=5, early_stopping_rounds=10)
    cv = cross_validate(frame, NAMES, folds, lgb_params(params, 0, None), params)

    assert cv.rounds == max(5, round(float(np.mean(cv.fold_rounds))))
    assert all(a > 0.6 for a in cv.fold_roc_auc)  # the signal is found in every fold
    # a label of pure noise early-stops almost at once: the floor holds
    noise = frame.assign(label=np.random.default_rng(1).binomial(1, 0.1, len(frame)).astype(np.int8))
    floored = train_params(max_rounds=200, min_rounds=40, early_stopping_rounds=5, learning_rate=0.5)
    starved = cross_validate(noise, NAMES, _folds(noise), lgb_params(floored, 0, None), floored)
    assert min(starved.fold_rounds) < 40 and starved.rounds >= 40


def test_the_lead_sample_is_fixed_and_keeps_whole_leads() -> None:
    frame = weekly_frame(n_leads=100)
    keep = sample_leads(frame["lead_id"], 30)

    assert frame.loc[keep, "lead_id"].nunique() == 30
    assert (keep == sample_leads(frame["lead_id"], 30)).all()
    assert frame.groupby("lead_id")["lead_id"].transform("size")[keep].eq(frame.groupby("lead_id").size().iloc[0]).all()
    assert sample_leads(frame["lead_id"], None).all()


def test_tuning_is_seeded_and_starts_from_the_configured_values() -> None:
    frame = weekly_frame(n_leads=60)
    params = train_params(tune_trials=3, max_rounds=60, tune_max_rounds=60, early_stopping_rounds=5)

    first = tune(frame, NAMES, params, lambda p: lgb_params(p, 0, None), HORIZON, 7)
    again = tune(frame, NAMES, params, lambda p: lgb_params(p, 0, None), HORIZON, 7)

    assert first.best == again.best and len(first.trials) == 3
    assert first.trials[0]["num_leaves"] == params.num_leaves  # trial 0 = the configured values
    assert first.trials[0]["learning_rate"] == pytest.approx(params.learning_rate)
    assert max(t["roc_auc"] for t in first.trials) >= first.trials[0]["roc_auc"]


def test_train_reports_rounds_folds_and_the_positives_the_gaps_drop() -> None:
    frame = weekly_frame(n_leads=80)
    result = train_models(frame, FEATURES, train_params(tune_trials=2), HORIZON, 0)
    report = result.report

    assert report["rounds"] == result.booster.num_trees() >= 5  # train_params' min_rounds
    assert report["cv"]["folds"] == 3 and len(report["cv"]["fold_roc_auc"]) == 3
    gaps = report["gap_positives"]
    assert gaps["total"] == gaps["before_calibration"] + gaps["before_test"] == result.split.positives["gap"]
    assert 0 < gaps["share_of_positives"] < 0.5  # two gaps: most positives are kept
    assert not report["constant_model"] and len(report["tuning"]["trials"]) == 2
