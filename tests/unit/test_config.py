"""params.yaml through the typed contract: the repo's file loads; every kind of bad file fails naming the key."""

from __future__ import annotations

import copy
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.config import Params, ParamsError, load_params

REPO_PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"


@pytest.fixture
def raw_params() -> dict[str, Any]:
    """The repo's params.yaml as plain data, to be broken one key at a time."""
    return copy.deepcopy(yaml.safe_load(REPO_PARAMS.read_text()))


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_repo_params_yaml_loads() -> None:
    params = load_params(REPO_PARAMS)

    assert isinstance(params, Params)
    assert params.demo_crm.leads > 0
    assert isinstance(params.demo_crm.end_date, date)
    assert params.base.crm_url.startswith("sqlite:///")


def test_load_params_reads_params_yaml_in_the_working_folder_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO_PARAMS.parent)

    assert load_params() == load_params(REPO_PARAMS)


def test_params_are_frozen() -> None:
    params = load_params(REPO_PARAMS)

    with pytest.raises(ValueError, match="frozen"):
        params.base.seed = 1  # type: ignore[misc]


def test_unknown_key_is_named(tmp_path: Path, raw_params: dict[str, Any]) -> None:
    raw_params["demo_crm"]["leeds"] = raw_params["demo_crm"].pop("leads")  # the typo the docstring warns about

    with pytest.raises(ParamsError) as caught:
        load_params(write(tmp_path, raw_params))

    message = str(caught.value)
    assert "demo_crm.leeds: unknown key" in message
    assert "demo_crm.leads: Field required" in message


def test_unknown_block_is_named(tmp_path: Path, raw_params: dict[str, Any]) -> None:
    raw_params["modle"] = {"trees": 100}

    with pytest.raises(ParamsError, match=r"modle: unknown key"):
        load_params(write(tmp_path, raw_params))


def test_missing_key_is_named(tmp_path: Path, raw_params: dict[str, Any]) -> None:
    del raw_params["base"]["seed"]

    with pytest.raises(ParamsError, match=r"base\.seed: Field required"):
        load_params(write(tmp_path, raw_params))


def test_missing_block_is_named(tmp_path: Path, raw_params: dict[str, Any]) -> None:
    del raw_params["demo_crm"]

    with pytest.raises(ParamsError, match=r"(?m)^  demo_crm: Field required"):
        load_params(write(tmp_path, raw_params))


@pytest.mark.parametrize(
    ("block", "key", "value"),
    [
        ("demo_crm", "leads", "many"),
        ("demo_crm", "leads", 2.5),
        ("demo_crm", "leads", 0),
        ("demo_crm", "end_date", "soon"),
        ("demo_crm", "history_days", 10),
        ("base", "seed", "forty-two"),
        ("base", "crm_url", 42),
    ],
)
def test_wrong_type_or_range_is_named(
    tmp_path: Path, raw_params: dict[str, Any], block: str, key: str, value: object
) -> None:
    raw_params[block][key] = value

    with pytest.raises(ParamsError, match=rf"{block}\.{key}: "):
        load_params(write(tmp_path, raw_params))


def test_every_bad_key_is_reported_at_once(tmp_path: Path, raw_params: dict[str, Any]) -> None:
    raw_params["demo_crm"]["leads"] = "many"
    del raw_params["base"]["seed"]

    with pytest.raises(ParamsError, match=r"2 problem\(s\)") as caught:
        load_params(write(tmp_path, raw_params))

    assert "demo_crm.leads" in str(caught.value)
    assert "base.seed" in str(caught.value)


def test_crm_url_with_a_password_is_refused_without_echoing_it(tmp_path: Path, raw_params: dict[str, Any]) -> None:
    raw_params["base"]["crm_url"] = "postgresql+psycopg://scorer:hunter2@db.example.com/crm"

    with pytest.raises(ParamsError, match=r"base\.crm_url: .*password") as caught:
        load_params(write(tmp_path, raw_params))

    assert "hunter2" not in str(caught.value)


def test_crm_url_without_a_password_is_accepted(tmp_path: Path, raw_params: dict[str, Any]) -> None:
    raw_params["base"]["crm_url"] = "postgresql+psycopg://scorer@db.example.com/crm"

    assert load_params(write(tmp_path, raw_params)).base.crm_url.endswith("@db.example.com/crm")


def test_unparseable_crm_url_is_named(tmp_path: Path, raw_params: dict[str, Any]) -> None:
    raw_params["base"]["crm_url"] = "postgresql+psycopg://scorer@db.example.com:port/crm"

    with pytest.raises(ParamsError, match=r"base\.crm_url: "):
        load_params(write(tmp_path, raw_params))


def test_missing_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"

    with pytest.raises(ParamsError, match=rf"params file {missing} not found"):
        load_params(missing)


def test_invalid_yaml_is_reported_with_its_location(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("base:\n  crm_url: [unclosed\n  seed: 42\n")

    with pytest.raises(ParamsError, match=r"is not valid YAML") as caught:
        load_params(path)

    assert str(path) in str(caught.value)
    assert "line" in str(caught.value)


@pytest.mark.parametrize(("text", "kind"), [("", "NoneType"), ("- base\n- demo_crm\n", "list"), ("42\n", "int")])
def test_a_file_that_is_not_a_mapping_is_refused(tmp_path: Path, text: str, kind: str) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(text)

    with pytest.raises(ParamsError, match=rf"must hold a mapping of blocks, got {kind}"):
        load_params(path)


def test_an_icp_region_outside_the_crm_vocabulary_is_named(tmp_path: Path, raw_params: dict[str, Any]) -> None:
    """A lead's region is always one of the vocabulary's, so a misspelt ICP region would match nobody, silently."""
    raw_params["features"]["icp"]["regions"] = ["NA", "Europe"]

    with pytest.raises(
        ParamsError, match=r"features\.icp\.regions\.1: Input should be 'NA', 'EMEA', 'APAC' or 'LATAM'"
    ):
        load_params(write(tmp_path, raw_params))


def test_the_params_regions_are_the_crm_vocabulary() -> None:
    from typing import get_args

    from pipelines.config import Region
    from pipelines.crm import vocab

    assert get_args(Region) == vocab.REGIONS
