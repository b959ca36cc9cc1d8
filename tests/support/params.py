"""The shipped params.yaml, read once: tests that generate the demo CRM or load the shipped rules files take the
ideal customer profile from it, as the stages do."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from pipelines.config import IcpParams, Params, load_params

ROOT = Path(__file__).resolve().parents[2]


@cache
def shipped_params() -> Params:
    """The repository's params.yaml, validated."""
    return load_params(ROOT / "params.yaml")


def demo_icp() -> IcpParams:
    """The ideal customer profile of params.yaml (`features.icp`): the demo's history and the shipped rules use it."""
    return shipped_params().features.icp
