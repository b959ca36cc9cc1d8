"""Bootstrap clusters: leads of one account are resampled together, a lead without an account on its own."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipelines.modeling import ClusterBootstrap, cluster_ids


def test_cluster_ids_are_accounts_and_account_less_leads_stand_alone() -> None:
    frame = pd.DataFrame({"lead_id": [1, 2, 3, 4, 1], "account_id": pd.array([7, 7, None, 8, 7], dtype="Int64")})
    ids = cluster_ids(frame)
    assert ids[0] == ids[1] == ids[4] == 7 and ids[3] == 8
    assert ids[2] == -4  # its own cluster, never an account id (those are >= 0)
    assert (cluster_ids(frame.drop(columns="account_id")) == -1 - frame["lead_id"].to_numpy()).all()


def test_cluster_bootstrap_draws_every_row_of_an_account_together() -> None:
    account = np.array([0, 0, 0, 1, 1, 2, 3, 3, 3, 3])
    boot = ClusterBootstrap(account, seed=1)
    assert boot.clusters == 4
    sizes = np.bincount(account)
    for _ in range(20):
        drawn = np.bincount(account[boot.sample()], minlength=4)
        assert (drawn % sizes == 0).all()  # whole accounts, each drawn some number of times
        assert drawn.sum() >= 4


def test_account_intervals_are_wider_when_leads_of_an_account_share_its_state() -> None:
    rng = np.random.default_rng(0)
    account_of_lead = np.repeat(np.arange(40), 5)  # 40 accounts of 5 leads
    rate = rng.beta(1, 4, 40)[account_of_lead]  # the account's state drives all its leads
    y = (rng.random(len(rate)) < rate).astype(float)

    def width(ids: np.ndarray) -> float:
        lo, hi = ClusterBootstrap(ids, seed=2).intervals(lambda idx: {"rate": y[idx].mean()}, 300, 0.9)["rate"]
        return hi - lo

    assert width(account_of_lead) > 1.3 * width(np.arange(len(y)))
