"""`leadscore rules`: raw snapshot + feature snapshots in, rule scores out, atomically; bad input exits 2 unwritten."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from pipelines import rules
from pipelines.cli import EXIT_BAD_INPUT, app
from pipelines.crm.schema import validate_crm
from pipelines.extract import write_snapshot
from pipelines.rules import stage

runner = CliRunner()


@pytest.fixture
def stage_inputs(tmp_path: Path, tiny_crm: dict[str, pd.DataFrame]) -> dict[str, Path]:
    """A raw snapshot folder of the shared tiny CRM, feature snapshots for its leads, and a params file."""
    write_snapshot(validate_crm(tiny_crm), tmp_path / "raw", source="test")
    snapshots = tmp_path / "features" / "snapshots.parquet"
    snapshots.parent.mkdir()
    pd.DataFrame(
        {
            "lead_id": [1, 1, 2, 3],
            "snapshot_at": pd.to_datetime(["2025-03-03", "2025-03-10", "2025-05-12", "2025-06-02"], utc=True),
            "some_feature": [0.1, 0.2, 0.3, 0.4],
        }
    ).to_parquet(snapshots)
    params = tmp_path / "params.yaml"
    text = Path("params.yaml").read_text()
    params.write_text(text.replace("file: config/mql_rules.yaml", f"file: {Path('config/mql_rules.yaml').resolve()}"))
    return {"raw": tmp_path / "raw", "snapshots": snapshots, "params": params, "out": tmp_path / "rules" / "s.parquet"}


def invoke(paths: dict[str, Path], *extra: str) -> object:
    return runner.invoke(
        app,
        [
            "rules",
            "--params",
            str(paths["params"]),
            "--raw",
            str(paths["raw"]),
            "--snapshots",
            str(paths["snapshots"]),
            "--out",
            str(paths["out"]),
            *extra,
        ],
    )


def test_the_stage_scores_every_snapshot_row(stage_inputs: dict[str, Path]) -> None:
    result = invoke(stage_inputs)
    assert result.exit_code == 0, result.output
    out = pd.read_parquet(stage_inputs["out"])
    assert list(out.columns) == list(rules.OUTPUT_COLUMNS)
    assert out["lead_id"].tolist() == [1, 1, 2, 3]
    # Lead 1: Software, 250 people, US, VP marketing: 10 + 10 + 5 + 15 + 5 = 45, then an email open (+1) on
    # 2025-03-03 10:00 (after the first snapshot) and a pricing visit (+10) on 03-05.
    assert out["rule_score"].tolist()[:2] == [45.0, 56.0]
    assert out["rules_fired"].iloc[1] == (
        "account industry in the ideal customer profile (+10); ideal company size (200 to 5,000 employees) (+10); "
        "based in an ideal-profile region (North America or EMEA) (+5); C-level or VP title (+15); "
        "works in marketing, sales or IT (+5); 1 e-mail open (+1); 1 pricing page visit (+10)"
    )
    # Lead 2: Manufacturing, size unknown, DE, marketing intern, gmail: 10 + 5 - 20 + 5 - 10 + trade show 5
    assert out["rule_score"].iloc[2] == -5.0
    assert not list(stage_inputs["out"].parent.glob(".*tmp"))  # no temp file left behind
    assert "4 rows" in result.stdout


def test_a_bad_rules_file_exits_2_naming_rule_and_key_and_writes_nothing(
    stage_inputs: dict[str, Path], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("threshold: 60\nengagement:\n  - {name: demo, activity: demo_request, points: 30, windw: 9}\n")
    result = invoke(stage_inputs, "--rules", str(bad))
    assert result.exit_code == EXIT_BAD_INPUT
    assert "rule 'demo' (engagement[0]), key windw: unknown key" in result.stderr
    assert not stage_inputs["out"].exists()
    assert not stage_inputs["out"].parent.exists()


def test_an_unknown_campaign_exits_2_and_leaves_the_previous_output_alone(
    stage_inputs: dict[str, Path], tmp_path: Path
) -> None:
    assert invoke(stage_inputs).exit_code == 0
    before = stage_inputs["out"].read_bytes()
    bad = tmp_path / "campaign.yaml"
    bad.write_text("threshold: 60\noverrides:\n  campaigns:\n    404: {threshold: 10}\n")
    result = invoke(stage_inputs, "--rules", str(bad))
    assert result.exit_code == EXIT_BAD_INPUT
    assert "overrides.campaigns.404: unknown campaign id 404" in result.stderr
    assert stage_inputs["out"].read_bytes() == before


def test_missing_snapshots_exit_2(stage_inputs: dict[str, Path]) -> None:
    stage_inputs["snapshots"].unlink()
    result = invoke(stage_inputs)
    assert result.exit_code == EXIT_BAD_INPUT
    assert "run the features stage first" in result.stderr


def test_the_four_part_file_can_be_chosen_on_the_command_line(stage_inputs: dict[str, Path]) -> None:
    result = invoke(stage_inputs, "--rules", "config/mql_rules_four_part.yaml")
    assert result.exit_code == 0, result.output
    out = pd.read_parquet(stage_inputs["out"])
    assert out["rule_threshold"].isna().all()
    assert out["rules_fired"].str.contains("ideal company: ").all()


def test_a_failed_write_keeps_the_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "scores.parquet"
    rules.write_scores(pd.DataFrame({"a": [1]}), path)

    def explode(self: pd.DataFrame, target: Path, **kwargs: object) -> None:
        Path(target).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", explode)
    with pytest.raises(OSError, match="disk full"):
        rules.write_scores(pd.DataFrame({"a": [2]}), path)
    monkeypatch.undo()
    assert pd.read_parquet(path)["a"].tolist() == [1]
    assert [p.name for p in tmp_path.iterdir()] == ["scores.parquet"]


def test_the_stage_scores_the_params_variants_beside_the_history_rule(stage_inputs: dict[str, Path]) -> None:
    params = stage_inputs["params"]
    params.write_text(
        params.read_text().replace(
            "four_part: {file: config/mql_rules_four_part.yaml}",
            f"four_part: {{file: {Path('config/mql_rules_four_part.yaml').resolve()}}}",
        )
    )
    variants = stage_inputs["out"].parent / "variants.parquet"
    result = invoke(stage_inputs, "--variants-out", str(variants))
    assert result.exit_code == 0, result.output
    history, out = pd.read_parquet(stage_inputs["out"]), pd.read_parquet(variants)
    assert out["lead_id"].tolist() == history["lead_id"].tolist()
    assert list(out.columns[2:]) == [
        f"{name}{suffix}" for name in ("decayed_30d", "window_30d", "four_part") for suffix in rules.VARIANT_SUFFIXES
    ]
    # lead 1's activities are days old at its second snapshot: decay and window lower only the engagement part
    assert 45.0 < out["decayed_30d_score"].iloc[1] < history["rule_score"].iloc[1]
    assert out["window_30d_score"].iloc[1] == history["rule_score"].iloc[1]
    assert "3 variant(s)" in result.stdout


def test_chunks_of_whole_leads_score_as_one_call(
    stage_inputs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    params = stage_inputs["params"]
    params.write_text(
        params.read_text().replace(
            "four_part: {file: config/mql_rules_four_part.yaml}",
            f"four_part: {{file: {Path('config/mql_rules_four_part.yaml').resolve()}}}",
        )
    )
    variants = stage_inputs["out"].parent / "variants.parquet"
    assert invoke(stage_inputs, "--variants-out", str(variants)).exit_code == 0
    whole, whole_variants = pd.read_parquet(stage_inputs["out"]), pd.read_parquet(variants)

    monkeypatch.setattr(stage, "CHUNK_ROWS", 2)  # lead 1's two rows, then leads 2 and 3
    result = invoke(stage_inputs, "--variants-out", str(variants))

    assert result.exit_code == 0, result.output
    pd.testing.assert_frame_equal(pd.read_parquet(stage_inputs["out"]), whole)
    pd.testing.assert_frame_equal(pd.read_parquet(variants), whole_variants)
    assert pq.ParquetFile(stage_inputs["out"]).metadata.num_row_groups == 2


def test_chunks_never_split_a_lead() -> None:
    # a chunk starts at the first lead whose rows begin past a multiple of 2 rows
    assert stage.chunk_bounds(np.array([1, 1, 2, 3, 3, 3, 4]), 2).tolist() == [0, 2, 6, 7]
    assert stage.chunk_bounds(np.array([1, 2, 1]), 1).tolist() == [0, 3]  # lead 1 not contiguous: one chunk
    assert stage.chunk_bounds(np.array([], dtype=np.int64), 5).tolist() == [0, 0]


def test_the_scored_leads_rows_are_read_alone(stage_inputs: dict[str, Path]) -> None:
    whole = rules.read_raw_tables(stage_inputs["raw"])

    some = rules.read_raw_tables(stage_inputs["raw"], np.array([2, 2]))

    assert some["leads"]["lead_id"].tolist() == [2]
    assert some["accounts"]["account_id"].tolist() == [11]
    pd.testing.assert_frame_equal(some["activities"], whole["activities"].iloc[[2]].reset_index(drop=True))
    pd.testing.assert_frame_equal(some["campaigns"], whole["campaigns"])
