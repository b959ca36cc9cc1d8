"""The typed view of `params.yaml`: one block per stage plus `base`, validated once at each entry point.

Unknown or missing keys fail loudly, naming the key, so a typo in `dvc exp run -S demo_crm.leeds=5` cannot
silently fall back to a default.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import sqlalchemy as sa
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class ParamsError(ValueError):
    """params.yaml is missing, malformed or breaks the typed contract."""


class StrictModel(BaseModel):
    """Base for every params block: no unknown keys, no mutation after loading."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def check_url_has_no_password(url: str) -> str:
    """The URL unchanged, or an error if it embeds a password (credentials never live in params)."""
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise ValueError(f"not a SQLAlchemy database URL: {exc}") from None
    if parsed.password:
        raise ValueError(
            "the database URL holds a password; keep credentials out of params.yaml: pass the URL with "
            "--url or the LEADSCORE_DB_URL environment variable, or use ~/.pgpass"
        )
    return url


class BaseParams(StrictModel):
    """Settings shared by all stages."""

    crm_url: str = Field(description="SQLAlchemy URL of the CRM database (no password)")
    seed: int = Field(description="Random seed for modelling stages")

    _check_url = field_validator("crm_url")(check_url_has_no_password)


class DemoCrmParams(StrictModel):
    """Size, seed and time span of the synthetic CRM."""

    leads: int = Field(gt=0, description="Number of leads to generate")
    seed: int = Field(description="Seed: the same seed gives an identical database")
    end_date: date = Field(description="'Today' of the demo history (UTC midnight)")
    history_days: int = Field(ge=120, le=3650, description="Days of history before end_date")


class Params(StrictModel):
    """All of params.yaml."""

    base: BaseParams
    demo_crm: DemoCrmParams


def _format_errors(path: Path, exc: ValidationError) -> str:
    lines = [f"{path}: {exc.error_count()} problem(s)"]
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        message = "unknown key (not in the typed params)" if err["type"] == "extra_forbidden" else err["msg"]
        lines.append(f"  {where}: {message}")
    return "\n".join(lines)


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml; ParamsError names every bad key."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"params file {path} not found") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{path} must hold a mapping of blocks, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise ParamsError(_format_errors(path, exc)) from None
