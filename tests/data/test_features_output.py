"""The features stage's output on a small demo CRM, produced through the CLI exactly as DVC runs it.

Once per module: a 2,000-lead demo CRM goes into SQLite, `leadscore extract` snapshots it and `leadscore features`
builds the labelled snapshots. The checks guard the contract downstream stages rely on: no personal data, labels
always 0/1, every row an open lead, the feature list matching the columns and their types, labels censored at the
end of history, and features that a CRM truncated at the snapshot reproduces exactly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.config import DemoCrmParams, FeaturesParams
from pipelines.crm import demo, vocab
from pipelines.crm.db import make_engine, write_crm
from pipelines.crm.schema import PERSONAL_COLUMNS, SCHEMAS
from pipelines.extract import read_snapshot
from pipelines.features.build import build_features
from pipelines.features.snapshots import STAGE_OUTCOMES, TARGET_STAGES, TERMINAL_STAGES
from tests.support.params import demo_icp

pytestmark = pytest.mark.slow  # a generated CRM through two CLI stages: ~10 s for the module

REPO_PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"


@dataclass(frozen=True)
class StageOutput:
    tables: dict[str, pd.DataFrame]
    manifest: dict
    params: FeaturesParams
    snapshots: pd.DataFrame
    feature_list: list[dict]
    summary: dict


@pytest.fixture(scope="module")
def output(tmp_path_factory: pytest.TempPathFactory) -> StageOutput:
    work = tmp_path_factory.mktemp("features_stage")
    crm = demo.generate(DemoCrmParams(leads=2_000, seed=7, end_date=date(2026, 11, 20), history_days=730), demo_icp())
    url = f"sqlite:///{work / 'crm.db'}"
    engine = make_engine(url, create_dirs=True)
    write_crm(engine, crm.tables)
    engine.dispose()
    runner = CliRunner()
    extracted = runner.invoke(app, ["extract", "--params", str(REPO_PARAMS), "--url", url, "--out", str(work / "raw")])
    assert extracted.exit_code == 0, extracted.output
    built = runner.invoke(
        app, ["features", "--params", str(REPO_PARAMS), "--raw", str(work / "raw"), "--out", str(work / "features")]
    )
    assert built.exit_code == 0, built.output
    tables, manifest = read_snapshot(work / "raw")
    params = FeaturesParams.model_validate(yaml.safe_load(REPO_PARAMS.read_text())["features"])
    return StageOutput(
        tables=tables,
        manifest=manifest,
        params=params,
        snapshots=pd.read_parquet(work / "features" / "snapshots.parquet"),
        feature_list=json.loads((work / "features" / "feature_list.json").read_text()),
        summary=json.loads((work / "features" / "summary.json").read_text()),
    )


def test_the_snapshot_is_the_crm_and_its_manifest_counts_it(output: StageOutput) -> None:
    for name, frame in output.tables.items():
        assert list(frame.columns) == list(SCHEMAS[name].columns)
        assert output.manifest["tables"][name]["rows"] == len(frame)
    latest = max(
        output.tables["leads"]["created_at"].max(),
        output.tables["leads"]["updated_at"].max(),
        output.tables["activities"]["occurred_at"].max(),
        output.tables["stage_history"]["entered_at"].max(),
    )
    assert output.manifest["history_end"] == latest


def test_there_are_examples_and_positives(output: StageOutput) -> None:
    assert len(output.snapshots) > 5_000
    assert 0 < output.snapshots["label"].mean() < 0.2
    assert output.summary["rows"] == len(output.snapshots)
    assert output.summary["positives"] == int(output.snapshots["label"].sum())


def test_no_personal_data_columns(output: StageOutput) -> None:
    personal = {c for cols in PERSONAL_COLUMNS.values() for c in cols}
    forbidden = personal | {"job_title", "status", "updated_at", "company_name", "domain", "detail", "reason", "name"}

    assert not set(output.snapshots.columns) & forbidden
    text = output.snapshots.select_dtypes(include=["object", "string"]).columns
    assert list(text) == []  # text only ever appears as a categorical with fixed levels


def test_labels_are_never_missing_and_are_0_or_1(output: StageOutput) -> None:
    label = output.snapshots["label"]

    assert label.notna().all() and set(label.unique()) <= {0, 1}
    assert label.dtype == np.int8


def test_every_row_is_an_open_lead_created_by_then(output: StageOutput) -> None:
    rows = output.snapshots[["lead_id", "snapshot_at"]].reset_index()
    stages = output.tables["stage_history"][["lead_id", "stage", "entered_at"]]
    created = output.tables["leads"].set_index("lead_id")["created_at"]
    closing = TARGET_STAGES[output.params.target_stage] | TERMINAL_STAGES

    assert (created.reindex(rows["lead_id"]).to_numpy() <= rows["snapshot_at"].to_numpy()).all()
    known = rows.merge(stages, on="lead_id")
    known = known[known["entered_at"] <= known["snapshot_at"]]
    assert not known["stage"].isin(closing).any()
    latest = known.sort_values("entered_at").groupby("index")["stage"].last()
    assert not (latest == "Disqualified").any()
    assert not rows.duplicated(["lead_id", "snapshot_at"]).any()


def test_labels_are_censored_at_the_end_of_history(output: StageOutput) -> None:
    horizon = pd.Timedelta(days=output.params.horizon_days)

    assert (output.snapshots["snapshot_at"] + horizon <= output.manifest["history_end"]).all()


def test_every_open_lead_is_a_row_whatever_its_age_with_long_open_rows_weighted(output: StageOutput) -> None:
    """The population nightly scoring scores: old open leads are on the grid, sampled by lead and weighted."""
    created = output.tables["leads"].set_index("lead_id")["created_at"].reindex(output.snapshots["lead_id"])
    ages = (output.snapshots["snapshot_at"] - created.reset_index(drop=True)).dt.total_seconds().to_numpy() / 86400
    weight = output.snapshots["weight"].to_numpy()
    assert output.params.max_lead_age_days is None and ages.max() > 365
    old = ages > output.params.old_lead_days
    assert (weight[~old] == 1).all() and (weight[old] == output.params.old_lead_keep_one_in).all()
    assert output.summary["lead_weeks"] == pytest.approx(weight.sum())


def test_labels_match_the_stage_history(output: StageOutput) -> None:
    stages = output.tables["stage_history"]
    target = stages[stages["stage"].isin(TARGET_STAGES[output.params.target_stage])]
    first = target.groupby("lead_id")["entered_at"].min()
    reach = first.reindex(output.snapshots["lead_id"]).to_numpy()
    horizon = pd.Timedelta(days=output.params.horizon_days)
    expected = (reach > output.snapshots["snapshot_at"].to_numpy()) & (
        reach <= (output.snapshots["snapshot_at"] + horizon).to_numpy()
    )

    assert (output.snapshots["label"].to_numpy() == expected.astype(np.int8)).all()


def test_feature_list_matches_columns_and_dtypes(output: StageOutput) -> None:
    names = [f["name"] for f in output.feature_list]

    # the stages' own outcomes ride along with the label and the weight, never as features
    assert list(output.snapshots.columns) == [
        "lead_id",
        "snapshot_at",
        "label",
        "weight",
        *STAGE_OUTCOMES,
        "account_id",
        *names,
    ]
    assert not set(STAGE_OUTCOMES) & set(names)
    # the account is a key (bootstrap clusters), never a feature; it is the lead's own
    assert "account_id" not in names
    account = output.tables["leads"].set_index("lead_id")["account_id"]
    carried = output.snapshots["account_id"]
    pd.testing.assert_series_equal(
        carried, output.snapshots["lead_id"].map(account).astype(carried.dtype), check_names=False
    )
    assert output.snapshots["lead_id"].dtype == np.int64
    assert str(output.snapshots["snapshot_at"].dtype) == "datetime64[ns, UTC]"
    for feature in output.feature_list:
        assert set(feature) == {"name", "kind", "family"}
        column = output.snapshots[feature["name"]]
        if feature["kind"] == "categorical":
            assert isinstance(column.dtype, pd.CategoricalDtype), feature["name"]
        else:
            assert feature["kind"] == "numeric" and pd.api.types.is_numeric_dtype(column), feature["name"]
    assert output.summary["features"] == len(names)


def test_engagement_features_vary_and_titles_are_parsed(output: StageOutput) -> None:
    s = output.snapshots

    assert s["n_activities_all"].max() > 0 and s["n_activities_all"].std() > 0
    assert set(s["seniority"].dropna().unique()) >= {"c_level", "vp", "director", "manager", "individual"}
    assert set(s["stage_at_t"].unique()) >= {"none", "MQL"}
    assert s["lead_source"].notna().all() and set(s["lead_source"].unique()) <= set(vocab.LEAD_SOURCES)


def test_a_crm_truncated_at_the_snapshot_reproduces_its_features(output: StageOutput) -> None:
    """End-to-end leakage check: delete every activity and stage entry after t; the features must not move."""
    dates = sorted(output.snapshots["snapshot_at"].unique())
    for t in (dates[len(dates) // 3], dates[-1]):
        rows = output.snapshots[output.snapshots["snapshot_at"] == t].reset_index(drop=True)
        truncated = dict(output.tables)
        truncated["activities"] = output.tables["activities"].query("occurred_at <= @t")
        truncated["stage_history"] = output.tables["stage_history"].query("entered_at <= @t")
        rebuilt = build_features(truncated, rows[["lead_id", "snapshot_at"]], output.params)

        expected = rows.drop(columns=["label", "weight", "account_id", *STAGE_OUTCOMES])  # keys, not features
        pd.testing.assert_frame_equal(rebuilt, expected, check_categorical=False)
