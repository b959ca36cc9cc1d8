"""Guards of a scoring run that refuse bad input before the work, so a broken night never replaces a good list.

- `check_as_of`: an as-of time in the future (beyond `base.future_tolerance_minutes` of clock skew) would make
  the latest view show that run for years: refused.
- `check_volume`: a run that read or scored far fewer leads than the latest published run (fewer than
  `score.min_leads_ratio` of them), or a CRM without leads, is almost always a broken load upstream: publishing it
  would empty sales' list. Refused unless the operator says the shrink is real (`--allow-shrink`).

The CRM checks that need the database (keys, types, references) are `pipelines.score.reader.preflight`.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import pandas as pd
from sqlalchemy.engine import Engine

from pipelines.config import ScoreTables
from pipelines.errors import BadInputError
from pipelines.extract import future_limit
from pipelines.score import store

log = logging.getLogger(__name__)


class ScoringGuardError(BadInputError):
    """A guard refused the run before anything was written (future as-of, shrunken or empty input)."""


def check_as_of(as_of: pd.Timestamp, tolerance_minutes: int, now: datetime | None = None) -> None:
    """Refuse an as-of time later than now plus the clock-skew tolerance."""
    limit = future_limit(tolerance_minutes, now)
    if as_of > limit:
        raise ScoringGuardError(
            f"--as-of {as_of:%Y-%m-%d %H:%M:%S}Z is in the future (now + {tolerance_minutes} min is "
            f"{limit:%Y-%m-%d %H:%M:%S}Z, base.future_tolerance_minutes): a future run would stay the latest "
            "list until that time; score as of now (omit --as-of) or a past time"
        )


def previous_run(engine: Engine, tables: ScoreTables) -> dict[str, Any] | None:
    """The run the latest-scores view shows now (greatest as_of, then latest finish), or None."""
    database = engine.url.database
    if engine.dialect.name == "sqlite" and (database in (None, "", ":memory:") or not Path(database).exists()):
        return None  # no scores database yet: do not create the file just to look
    runs = store.read_runs(engine, tables)
    if "production" in runs.columns:  # the view shows production runs only (NULL: runs from before the flag)
        runs = runs[runs["production"].isna() | runs["production"].astype("boolean").fillna(True)]
    if runs.empty:
        return None
    return cast(dict[str, Any], runs.iloc[-1].to_dict())  # column names: str


def check_volume(what: str, count: int, previous: dict[str, Any] | None, ratio: float, allow_shrink: bool) -> None:
    """Refuse `count` leads `what` ("read" or "scored") when none, or fewer than `ratio` x the previous run's."""
    column = f"leads_{what}"
    before = None if previous is None or pd.isna(previous.get(column)) else int(previous[column])
    if what == "read" and count == 0:
        problem = "the CRM's leads table is empty"
    elif before and count < ratio * before:
        assert previous is not None  # `before` was read from it
        problem = (
            f"{count:,} leads {what}, fewer than {ratio:g} x the {before:,} of the latest run "
            f"({previous['run_id']}, as of {pd.Timestamp(previous['as_of']):%Y-%m-%d %H:%M:%S}Z; "
            "score.min_leads_ratio)"
        )
    else:
        return
    if allow_shrink:
        log.warning("%s; going on because of --allow-shrink", problem)
        return
    raise ScoringGuardError(
        f"{problem}: this looks like a broken CRM load, and publishing it would replace the "
        "latest list; nothing was written. Fix the load, or pass --allow-shrink if the shrink "
        "is real"
    )
