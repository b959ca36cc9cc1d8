"""README.md stays true to what CI runs and what the project ships."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _commands_after(heading: str, text: str) -> str:
    match = re.search(re.escape(heading) + r".*?```bash\n(.*?)\n```", text, flags=re.S)
    assert match, f"README has no command block after {heading!r}"
    return match.group(1).strip()


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    readme = (ROOT / "README.md").read_text()
    test_command = _commands_after("**Run the tests**", readme)
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_command in ci.splitlines()


def test_readme_main_job_command_runs_dvc_repro() -> None:
    readme = (ROOT / "README.md").read_text()
    assert _commands_after("**Run the main job**", readme).endswith("dvc repro")


def test_every_dvc_stage_is_listed_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name in stages:
        assert f"`{name}`" in readme, f"stage {name} is missing from the README's stage table"
