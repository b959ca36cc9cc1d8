"""`leadscore`: the command line of the pipeline; one command per stage, each a thin shell around a pure core.

Exit codes (for cron and DVC): 0 success, 2 bad input (data, params or arguments), 1 anything unexpected.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from pipelines.config import ParamsError
from pipelines.crm.schema import CrmDataError

log = logging.getLogger(__name__)

EXIT_BAD_INPUT = 2

app = typer.Typer(
    name="leadscore",
    help="Predictive lead scoring: demo CRM, features, model, thresholds and nightly scoring.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

UrlOption = Annotated[
    str,
    typer.Option(
        "--url",
        envvar="LEADSCORE_DB_URL",
        help="SQLAlchemy database URL (or env LEADSCORE_DB_URL; keep passwords in the env or ~/.pgpass).",
    ),
]
ParamsOption = Annotated[Path, typer.Option("--params", help="The params.yaml to read.")]


@app.callback()
def _configure(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Set up logging for the command being run (never at import)."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@contextmanager
def bad_input_exits() -> Iterator[None]:
    """Turn a data or params error into one clear message on stderr and exit code 2."""
    try:
        yield
    except (CrmDataError, ParamsError, ValidationError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None


def _default_truth_path(url: str) -> Path:
    """Beside a SQLite file as <stem>_truth.parquet; in the working folder for server databases."""
    import sqlalchemy as sa

    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        db = Path(parsed.database)
        return db.with_name(f"{db.stem}_truth.parquet")
    return Path("crm_truth.parquet")


@app.command("demo-crm")
def demo_crm(
    url: UrlOption,
    leads: Annotated[int, typer.Option(min=1, help="Number of leads.")] = 25_000,
    seed: Annotated[int, typer.Option(help="Seed; the same seed gives an identical database.")] = 42,
    end_date: Annotated[
        str | None, typer.Option(help="'Today' of the history, YYYY-MM-DD (default: today, UTC).")
    ] = None,
    history_days: Annotated[int, typer.Option(min=120, help="Days of history before end-date.")] = 730,
    truth: Annotated[
        Path | None, typer.Option(help="Ground-truth Parquet (default: beside a SQLite file).")
    ] = None,
) -> None:
    """Generate the synthetic CRM (five tables) and its ground-truth file."""
    from pipelines.config import DemoCrmParams
    from pipelines.crm import demo
    from pipelines.crm.db import display_url, make_engine, write_crm

    with bad_input_exits():
        try:
            end = date.fromisoformat(end_date) if end_date else datetime.now(UTC).date()
        except ValueError:
            raise typer.BadParameter(f"--end-date {end_date!r} is not YYYY-MM-DD") from None
        params = DemoCrmParams(leads=leads, seed=seed, end_date=end, history_days=history_days)
        result = demo.generate(params)
        truth_path = truth or _default_truth_path(url)
        engine = make_engine(url, create_dirs=True)
        write_crm(engine, result.tables)
        demo.write_truth(result.truth, truth_path)
        log.info(
            "demo CRM written to %s (%s leads, %s activities, %s stage rows); ground truth in %s",
            display_url(url), f"{len(result.tables['leads']):,}", f"{len(result.tables['activities']):,}",
            f"{len(result.tables['stage_history']):,}", truth_path,
        )


@app.command("validate")
def validate(url: UrlOption) -> None:
    """Check every CRM table against the schemas; one clear message and exit 2 on bad data."""
    from pipelines.crm.db import display_url, make_engine, read_crm

    with bad_input_exits():
        tables = read_crm(make_engine(url))
        counts = ", ".join(f"{name} {len(frame):,}" for name, frame in tables.items())
        typer.echo(f"{display_url(url)}: valid ({counts} rows)")


def main() -> None:
    """Console-script entry point."""
    app()
