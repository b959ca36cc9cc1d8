"""`leadscore`: the command line of the pipeline; one command per stage, each a thin shell around a pure core.

Exit codes (for cron and DVC): 0 success, 2 bad input (data, params, arguments, or a database that cannot be
reached), 1 anything unexpected (one line; `-v` adds the traceback).
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Annotated

import typer

from pipelines.errors import BadInputError

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


def _version(value: bool) -> None:
    if value:
        from importlib import metadata

        try:
            version = metadata.version("lead-scoring")
        except metadata.PackageNotFoundError:  # run from a source tree that was never installed
            version = "unknown (not installed)"
        typer.echo(f"leadscore {version}")
        raise typer.Exit()


def quiet_third_party_warnings() -> None:
    """Silence the known third-party warnings a normal run would print, by message (nothing broader).

    pandera imports pyspark.pandas whenever pyspark is installed (the dev and spark extras), and pyspark warns on
    every import that it does not fully support pandas 3; that says nothing about this run.
    """
    warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas", category=FutureWarning)


@app.callback()
def _configure(
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose", "-v", help="Debug lines of each stage (reads, row counts, timings); tracebacks of bugs."
        ),
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Warnings and errors only.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """Set up logging for the command being run (never at import)."""
    if verbose and quiet:
        raise typer.BadParameter("--verbose and --quiet exclude each other")
    quiet_third_party_warnings()
    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Debug lines of this package only: third-party debug output (MLflow, SQLAlchemy, urllib3) is noise here.
    logging.getLogger("pipelines").setLevel(logging.DEBUG if verbose else logging.NOTSET)


@contextmanager
def bad_input_exits() -> Iterator[None]:
    """Turn a data or params error into one clear message on stderr and exit code 2."""
    try:
        yield
    except BadInputError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except ValueError as exc:
        from pydantic import ValidationError

        if not isinstance(exc, ValidationError):
            raise
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
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            envvar="LEADSCORE_DB_URL",
            help="SQLAlchemy URL to write the five tables to (--format db; or env LEADSCORE_DB_URL).",
        ),
    ] = None,
    leads: Annotated[int | None, typer.Option(min=1, help="Number of leads (default: demo_crm.leads).")] = None,
    seed: Annotated[
        int | None, typer.Option(help="Seed; the same seed gives an identical database (default: demo_crm.seed).")
    ] = None,
    end_date: Annotated[
        str | None, typer.Option(help="'Today' of the history, YYYY-MM-DD (default: demo_crm.end_date).")
    ] = None,
    history_days: Annotated[
        int | None, typer.Option(min=120, help="Days of history before end-date (default: demo_crm.history_days).")
    ] = None,
    batch_leads: Annotated[
        int | None,
        typer.Option(min=1, help="Leads generated at a time (bounds memory; default: demo_crm.batch_leads)."),
    ] = None,
    truth: Annotated[
        Path | None, typer.Option(help="Ground-truth Parquet (default: beside a SQLite file, or in --out).")
    ] = None,
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            help="db (the five tables at --url), or the CSV files of a salesforce or "
            "hubspot export written into --out (for the presets in config/mappings).",
        ),
    ] = "db",
    out: Annotated[Path | None, typer.Option("--out", help="Folder for --format salesforce|hubspot.")] = None,
    params_path: Annotated[
        Path,
        typer.Option(
            "--params",
            help="The params.yaml whose demo_crm block gives what is not passed, and whose features.icp is the "
            "ideal customer profile the history's MQL rule used.",
        ),
    ] = Path("params.yaml"),
) -> None:
    """Generate the synthetic CRM (five tables, or a vendor's export files) and its ground-truth file."""
    import pandas as pd

    from pipelines.config import DemoCrmParams, load_params
    from pipelines.crm import demo, vendor
    from pipelines.crm import truth as ground_truth
    from pipelines.crm.db import display_url, make_engine, write_crm, write_crm_batches

    with bad_input_exits():
        if fmt not in ("db", "salesforce", "hubspot"):
            raise typer.BadParameter(f"--format must be db, salesforce or hubspot, not {fmt!r}")
        if fmt == "db" and url is None:
            raise typer.BadParameter("--format db needs --url (or env LEADSCORE_DB_URL)")
        if fmt != "db" and out is None:
            raise typer.BadParameter(f"--format {fmt} needs --out DIR")
        try:
            end = date.fromisoformat(end_date) if end_date else None
        except ValueError:
            raise typer.BadParameter(f"--end-date {end_date!r} is not YYYY-MM-DD") from None
        given = {
            "leads": leads,
            "seed": seed,
            "end_date": end,
            "history_days": history_days,
            "batch_leads": batch_leads,
        }
        given = {key: value for key, value in given.items() if value is not None}
        # The params' demo_crm block is the one place the defaults live, features.icp the one ideal customer profile.
        loaded = load_params(params_path)
        params = DemoCrmParams(**{**loaded.demo_crm.model_dump(), **given})
        icp = loaded.features.icp
        if fmt == "db" and len(demo.batch_sizes(params.leads, params.batch_leads)) > 1:  # streamed: one batch in memory
            assert url is not None
            truth_path = truth or _default_truth_path(url)
            with ground_truth.truth_writer(truth_path) as add_truth:

                def batches() -> Iterator[dict[str, pd.DataFrame]]:
                    for batch in demo.iter_batches(params, icp):
                        add_truth(batch.truth)
                        yield batch.tables

                written = write_crm_batches(make_engine(url, create_dirs=True), batches())
            log.info(
                "demo CRM written to %s (%s leads, %s activities, %s stage rows, in %d batches); ground truth in %s",
                display_url(url),
                f"{written['leads']:,}",
                f"{written['activities']:,}",
                f"{written['stage_history']:,}",
                len(demo.batch_sizes(params.leads, params.batch_leads)),
                truth_path,
            )
            return
        result = demo.generate(params, icp)
        if fmt == "db":
            assert url is not None
            truth_path = truth or _default_truth_path(url)
            write_crm(make_engine(url, create_dirs=True), result.tables)
            where = display_url(url)
        else:
            assert out is not None
            files = (
                vendor.salesforce_files(result.tables) if fmt == "salesforce" else vendor.hubspot_files(result.tables)
            )
            vendor.write_files(files, out)
            truth_path = truth or out.with_name(f"{out.name}_truth.parquet")
            where = f"{out} ({fmt} export: {', '.join(f'{n}.csv' for n in files)})"
        ground_truth.write_truth(result.truth, truth_path)
        log.info(
            "demo CRM written to %s (%s leads, %s activities, %s stage rows); ground truth in %s",
            where,
            f"{len(result.tables['leads']):,}",
            f"{len(result.tables['activities']):,}",
            f"{len(result.tables['stage_history']):,}",
            truth_path,
        )


@app.command("import")
def import_crm(
    url: UrlOption,
    mapping: Annotated[
        Path | None, typer.Option("--mapping", help="Mapping YAML (default: mapping.file of the params).")
    ] = None,
    params: ParamsOption = Path("params.yaml"),
    keep_leaky: Annotated[
        bool,
        typer.Option(
            "--keep-leaky",
            help="Pass the leaky columns through as features: ONLY to measure the leak; such a model is not usable.",
        ),
    ] = False,
) -> None:
    """Load your own CRM export (CSV, Parquet or SQL) through a column mapping into the CRM tables at --url."""
    from pipelines.config import load_params
    from pipelines.crm.db import display_url
    from pipelines.crm.mapping import (
        MappingError,
        apply_mapping,
        load_mapping,
        read_sources,
        with_leaky_as_attributes,
        write_mapped,
    )

    with bad_input_exits():
        path = mapping or load_params(params).mapping.file
        if path is None:
            raise MappingError(f"no mapping: pass --mapping FILE or set mapping.file in {params}")
        loaded = load_mapping(path)
        if keep_leaky:
            log.warning("--keep-leaky: the leaky columns become features; figures from this CRM show the leak only")
            loaded = with_leaky_as_attributes(loaded)
        mapped = apply_mapping(read_sources(loaded), loaded)
        write_mapped(url, mapped)
        counts = ", ".join(f"{name} {len(frame):,}" for name, frame in mapped.tables.items())
        typer.echo(
            f"{path} -> {display_url(url)}: {counts} rows, {len(mapped.attributes.columns) - 1} lead "
            f"attribute(s){'; leads-only (one snapshot)' if mapped.leads_only else ''}"
        )


@app.command("validate")
def validate(url: UrlOption) -> None:
    """Check every CRM table against the schemas; one clear message and exit 2 on bad data."""
    from pipelines.crm.db import display_url, make_engine, read_crm
    from pipelines.errors import CrmDataError

    with bad_input_exits():
        tables = read_crm(make_engine(url))
        if tables["leads"].empty:  # valid by the schemas, but nothing downstream can work on it
            raise CrmDataError(f"table 'leads' in {display_url(url)} is empty: a CRM needs leads")
        counts = ", ".join(f"{name} {len(frame):,}" for name, frame in tables.items())
        typer.echo(f"{display_url(url)}: valid ({counts} rows)")


@app.command("extract")
def extract(
    out: Annotated[Path, typer.Option("--out", help="Snapshot folder: <table>.parquet files and manifest.json.")],
    params: ParamsOption = Path("params.yaml"),
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            envvar="LEADSCORE_DB_URL",
            help="Database URL (default: base.crm_url of the params; or env LEADSCORE_DB_URL).",
        ),
    ] = None,
) -> None:
    """Snapshot the five validated CRM tables into Parquet files plus a manifest, atomically."""
    from pipelines.config import load_params
    from pipelines.extract import extract as run_extract

    with bad_input_exits():
        base = load_params(params).base
        manifest = run_extract(
            url or base.crm_url, out, future_tolerance_minutes=base.future_tolerance_minutes, progress=True
        )
        counts = ", ".join(f"{name} {meta['rows']:,}" for name, meta in manifest["tables"].items())
        typer.echo(f"snapshot in {out}: {counts} rows; history ends {manifest['history_end']}")


@app.command("features")
def features(
    raw: Annotated[Path, typer.Option("--raw", help="The CRM snapshot folder written by `leadscore extract`.")],
    out: Annotated[Path, typer.Option("--out", help="Output folder: snapshots.parquet, feature_list.json.")],
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Point-in-time training examples: the snapshot grid, its labels and every feature, chunk by chunk."""
    from pipelines.config import load_params
    from pipelines.features.stage import run_features

    with bad_input_exits():
        summary = run_features(raw, out, load_params(params).features)
        typer.echo(
            f"features in {out}: {summary['rows']:,} rows, {summary['features']} features, "
            f"{summary['positives']:,} positives ({100 * summary['positive_rate']:.2f}%)"
        )


@app.command("rules")
def rules(
    raw: Annotated[Path, typer.Option("--raw", help="The CRM snapshot folder written by `leadscore extract`.")],
    snapshots: Annotated[
        Path, typer.Option("--snapshots", help="Parquet file with the (lead_id, snapshot_at) rows to score.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Output Parquet file of rule scores.")],
    params: ParamsOption = Path("params.yaml"),
    rules_file: Annotated[
        Path | None, typer.Option("--rules", help="Rules file to evaluate instead of rules.file of the params.")
    ] = None,
    variants_out: Annotated[
        Path | None, typer.Option("--variants-out", help="Also score rules.variants of the params into this Parquet.")
    ] = None,
) -> None:
    """Rule-based MQL scores point-in-time: score, MQL flag and the rules that fired, per (lead, snapshot)."""
    from pipelines import rules as mql_rules
    from pipelines.config import load_params
    from pipelines.rules.stage import run_rules

    with bad_input_exits():
        loaded = load_params(params)
        ruleset = mql_rules.load_rules(rules_file or loaded.rules.file, loaded.features.icp)
        variants = mql_rules.load_variants(loaded.rules, loaded.features.icp) if variants_out is not None else {}
        scores = run_rules(ruleset, variants, raw, snapshots, out, variants_out)
        typer.echo(
            f"rule scores in {out}: {scores.rows:,} rows, {scores.mql:,} MQL at the snapshot"
            + (f"; {scores.variants} variant(s) in {variants_out}" if variants_out is not None else "")
        )


FeaturesDirOption = Annotated[
    Path, typer.Option("--features", help="Features folder: snapshots.parquet and feature_list.json.")
]
ModelsDirOption = Annotated[Path, typer.Option("--models", help="Models folder written by `leadscore train`.")]


@app.command("train")
def train(
    features: FeaturesDirOption,
    out: Annotated[Path, typer.Option("--out", help="Models folder: booster.txt, baselines/, split.json.")],
    params: ParamsOption = Path("params.yaml"),
    metrics: Annotated[
        Path | None, typer.Option("--metrics", help="Write the cross-validation figures to this JSON file.")
    ] = None,
) -> None:
    """Out-of-time split, LightGBM tuned and its rounds chosen by purged CV, and the logistic-regression baseline."""
    from pipelines.config import load_params
    from pipelines.train import run_train

    with bad_input_exits():
        result = run_train(load_params(params), features, out, metrics)
        cv = result.report["cv"]
        typer.echo(
            f"models in {out}: {result.report['rounds']} rounds (purged CV, {cv['folds']} folds, mean fold "
            f"ROC-AUC {cv['mean_roc_auc']:.4f}){'; CONSTANT MODEL' if result.report['constant_model'] else ''}"
        )


@app.command("calibrate")
def calibrate(
    features: FeaturesDirOption,
    models: ModelsDirOption,
    params: ParamsOption = Path("params.yaml"),
    rules: Annotated[
        Path | None, typer.Option("--rules", help="Rule scores Parquet (needed by the match_rules policy).")
    ] = None,
) -> None:
    """Fit the calibrator and the per-stage thresholds on the calibration slice (models/thresholds.json)."""
    from pipelines.calibrate import run_calibrate
    from pipelines.config import load_params

    with bad_input_exits():
        _, thresholds = run_calibrate(load_params(params), features, models, rules)
        shown = ", ".join(f"{s} {t:.4f}" for s, t in thresholds.global_thresholds.items())
        typer.echo(f"calibrator and thresholds in {models}: {shown}")


@app.command("evaluate")
def evaluate(
    features: FeaturesDirOption,
    models: ModelsDirOption,
    rules: Annotated[Path, typer.Option("--rules", help="Rule scores Parquet of the same snapshots.")],
    metrics: Annotated[Path, typer.Option("--metrics", help="Metrics folder (evaluate.json).")],
    plots: Annotated[Path, typer.Option("--plots", help="Plots folder (CSV tables for `dvc plots show`).")],
    params: ParamsOption = Path("params.yaml"),
    truth: Annotated[
        Path | None, typer.Option("--truth", help="Demo ground truth; when present, oracle figures are added.")
    ] = None,
    rule_variants: Annotated[
        Path | None, typer.Option("--rule-variants", help="The rules stage's variants Parquet (standard baselines).")
    ] = None,
    raw: Annotated[
        Path | None, typer.Option("--raw", help="CRM snapshot folder: with --truth, adds the observable ceiling.")
    ] = None,
) -> None:
    """Test-slice metrics and plots of the model, the baselines and (demo only) the oracle and observable ceiling."""
    from pipelines.config import load_params
    from pipelines.evaluate import run_evaluate

    with bad_input_exits():
        result = run_evaluate(
            load_params(params),
            features,
            models,
            rules,
            truth,
            metrics,
            plots,
            variants_path=rule_variants,
            raw_dir=raw,
        )
        m = result.metrics
        oracle = f" (oracle {m['oracle_roc_auc']:.4f})" if "oracle_roc_auc" in m else ""
        if "observable_ceiling_roc_auc" in m:
            oracle += f" (observable ceiling {m['observable_ceiling_roc_auc']:.4f})"
        best = (
            f", vs the best rule {m['best_rule']} {m['sql_capture_ratio_vs_best_rule']:.2f}x"
            if "best_rule" in m
            else ""
        )
        typer.echo(
            f"test ROC-AUC {m['roc_auc']:.4f}{oracle}, ECE {m['ece']:.4f}, SQL capture vs rules "
            f"{m['sql_capture_ratio_vs_rules']:.2f}x{best}; metrics in {metrics}, plots in {plots}"
        )


TrackingOption = Annotated[
    str | None,
    typer.Option(
        "--tracking-uri",
        envvar="MLFLOW_TRACKING_URI",
        help="MLflow tracking URI (or env MLFLOW_TRACKING_URI; default sqlite:///mlflow.db + mlartifacts/).",
    ),
]
ForceOption = Annotated[bool, typer.Option("--force", help="Move the champion alias even if the gate fails.")]


@app.command("register")
def register(
    features: FeaturesDirOption,
    models: ModelsDirOption,
    metrics: Annotated[Path, typer.Option("--metrics", help="Metrics folder (evaluate.json, train.json).")],
    plots: Annotated[Path, typer.Option("--plots", help="Plots folder written by `leadscore evaluate`.")],
    out: Annotated[Path, typer.Option("--out", help="Small JSON of the registered version (name, version, ...).")],
    card: Annotated[Path | None, typer.Option("--card", help="Also write the model card (Markdown) here.")] = None,
    lock: Annotated[Path, typer.Option("--lock", help="dvc.lock holding the inputs' hashes.")] = Path("dvc.lock"),
    params: ParamsOption = Path("params.yaml"),
    tracking_uri: TrackingOption = None,
    force: Annotated[
        bool, typer.Option("--force", help="Make the version champion even if the absolute or relative gate fails.")
    ] = False,
) -> None:
    """Log the training run to MLflow, register its scoring model as challenger, make it champion if it clears the
    gates (absolute: beats the best baseline, ECE, not constant; relative: not worse than the champion).

    Exit code 0 whenever the version is registered, champion or not (the log line and --out say why not); 2 on bad
    input."""
    from pipelines.config import load_params
    from pipelines.registry.inputs import RegisterInputs
    from pipelines.registry.tracking import run_register

    with bad_input_exits():
        summary = run_register(
            load_params(params),
            RegisterInputs(features, models, metrics, plots, lock),
            out,
            card,
            tracking_uri,
            force=force,
        )
        typer.echo(
            f"{summary['name']} version {summary['version']} registered ({', '.join(summary['aliases'])}; "
            f"{summary['registration']} registration); champion is version {summary['champion']}; "
            f"details in {out}"
        )


@app.command("promote")
def promote(
    version: Annotated[str, typer.Option("--version", help="The model version to make champion.")],
    features: FeaturesDirOption = Path("data/features"),
    models: ModelsDirOption = Path("models"),
    params: ParamsOption = Path("params.yaml"),
    force: ForceOption = False,
    tracking_uri: TrackingOption = None,
) -> None:
    """Make a version champion if it passes the gate against the current champion on the test rows (exit 2 if not)."""
    from pipelines.config import load_params
    from pipelines.registry.aliases import promote
    from pipelines.registry.inputs import gate_rows
    from pipelines.registry.server import registry_client

    with bad_input_exits():
        loaded = load_params(params)
        client = registry_client(tracking_uri)
        gate = promote(client, loaded.registry.model_name, version, gate_rows(features, models), loaded, force)
        typer.echo(
            f"{loaded.registry.model_name} version {version} is champion"
            f"{'' if gate.passed else ' (gate failed, forced)'}: " + "; ".join(gate.reasons)
        )


@app.command("rollback")
def rollback(
    version: Annotated[
        str | None, typer.Option("--version", help="Version to return to (default: the previous champion).")
    ] = None,
    features: FeaturesDirOption = Path("data/features"),
    models: ModelsDirOption = Path("models"),
    params: ParamsOption = Path("params.yaml"),
    force: ForceOption = False,
    tracking_uri: TrackingOption = None,
) -> None:
    """Return the champion alias to the previous champion, through the same gate (exit 2 if it fails)."""
    from pipelines.config import load_params
    from pipelines.registry.aliases import rollback as rollback_to
    from pipelines.registry.inputs import gate_rows
    from pipelines.registry.server import registry_client

    with bad_input_exits():
        loaded = load_params(params)
        client = registry_client(tracking_uri)
        target, gate = rollback_to(
            client, loaded.registry.model_name, version, gate_rows(features, models), loaded, force
        )
        typer.echo(
            f"{loaded.registry.model_name} champion rolled back to version {target}"
            f"{'' if gate.passed else ' (gate failed, forced)'}: " + "; ".join(gate.reasons)
        )


EXIT_LOCKED = 3
EXIT_DRIFT = 4


@app.command("score")
def score(
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            envvar="LEADSCORE_DB_URL",
            help="CRM database to score (default: base.crm_url of the params; or env LEADSCORE_DB_URL).",
        ),
    ] = None,
    scores_url: Annotated[
        str | None,
        typer.Option(
            "--scores-url",
            envvar="LEADSCORE_SCORES_URL",
            help="Database to write lead_scores and scoring_runs to (default: the CRM database).",
        ),
    ] = None,
    model_uri: Annotated[
        str | None, typer.Option("--model-uri", help="Model to score with (default: score.model_uri of the params).")
    ] = None,
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="Score as of this UTC time, ISO format (default: now).")
    ] = None,
    engine: Annotated[
        str | None, typer.Option("--engine", help="pandas (in process) or spark (default: score.engine).")
    ] = None,
    params: ParamsOption = Path("params.yaml"),
    tracking_uri: TrackingOption = None,
    fail_on_drift: Annotated[
        bool, typer.Option("--fail-on-drift", help="Exit 4 (after writing the scores) when drift passes the alarm.")
    ] = False,
    staging_dir: Annotated[
        Path | None, typer.Option("--staging-dir", help="Folder for the run's temporary files (default: the temp dir).")
    ] = None,
    allow_shrink: Annotated[
        bool,
        typer.Option(
            "--allow-shrink",
            help="Publish even with no leads, or fewer than score.min_leads_ratio x "
            "the latest run's (a real shrink, not a broken load).",
        ),
    ] = False,
    snapshot: Annotated[
        Path | None,
        typer.Option(
            "--snapshot",
            help="--engine spark: read this Parquet snapshot of the CRM (leadscore extract) instead of the "
            "database (JDBC); --url still names the CRM for its own lead ids.",
        ),
    ] = None,
) -> None:
    """Score every open lead with the registered model and write the run back atomically (nightly batch job).

    Exit codes: 0 done, 2 bad input (nothing written), 3 another run holds the lock (nothing written),
    4 done but drift above score.psi_warning (only with --fail-on-drift), 1 anything unexpected.
    """
    from pipelines.config import load_params
    from pipelines.crm.db import display_url
    from pipelines.score.run import parse_as_of, run_score
    from pipelines.score.store import ScoringLockedError

    with bad_input_exits():
        loaded = load_params(params)
        chosen = engine or loaded.score.engine
        if chosen not in ("pandas", "spark"):
            raise typer.BadParameter(f"--engine must be pandas or spark, not {chosen!r}")
        if snapshot is not None and chosen != "spark":
            raise typer.BadParameter("--snapshot is read by --engine spark only (the pandas engine reads --url)")
        try:
            run = run_score(
                url or loaded.base.crm_url,
                scores_url,
                parse_as_of(as_of),
                loaded,
                model_uri or loaded.score.model_uri,
                tracking_uri,
                chosen,
                staging_root=staging_dir,
                allow_shrink=allow_shrink,
                snapshot=snapshot,
            )
        except ScoringLockedError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(EXIT_LOCKED) from None
    psi = "n/a" if run["psi_score"] is None else f"{run['psi_score']:.3f}"
    worst = "" if run["psi_max_feature"] is None else f", max {run['psi_max']:.3f} ({run['psi_max_feature']})"
    typer.echo(
        f"scored {run['leads_scored']:,} open leads of {run['leads_read']:,} as of {run['as_of']:%Y-%m-%d %H:%M:%S}Z "
        f"with {run['model_name']} v{run['model_version']} in {run['seconds_total']:.1f} s "
        f"({run['rows_per_second']:,.0f} leads/s): MQL {run['n_mql']:,}, SAL {run['n_sal']:,}, SQL {run['n_sql']:,}; "
        f"rule MQL {run['n_rule_mql']:,}; PSI score {psi}{worst}; status {run['status']}; run {run['run_id']} in "
        f"{display_url(scores_url or url or loaded.base.crm_url)}"
        + (f" (replaced run {run['replaced_run_id']})" if run["replaced_run_id"] else "")
        + ("" if run.get("production", True) else "; not production: history only, not in the latest view")
    )
    if fail_on_drift and run["status"] == "drift_warning":
        raise typer.Exit(EXIT_DRIFT)


EXIT_DEGRADED = 4


@app.command("backtest")
def backtest(
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            envvar="LEADSCORE_DB_URL",
            help="CRM database holding the outcomes (default: base.crm_url of the params; or env LEADSCORE_DB_URL).",
        ),
    ] = None,
    scores_url: Annotated[
        str | None,
        typer.Option(
            "--scores-url",
            envvar="LEADSCORE_SCORES_URL",
            help="Database holding lead_scores and scoring_runs; the backtests table is written there too "
            "(default: the CRM database).",
        ),
    ] = None,
    rerun_all: Annotated[
        bool, typer.Option("--all", help="Judge every due run again, replacing its row (default: new ones only).")
    ] = False,
    fail_on_degradation: Annotated[
        bool,
        typer.Option(
            "--fail-on-degradation", help="Exit 4 (after writing) when a judged run leaves the observed/expected band."
        ),
    ] = False,
    no_mlflow: Annotated[bool, typer.Option("--no-mlflow", help="Do not log the figures to MLflow.")] = False,
    params: ParamsOption = Path("params.yaml"),
    tracking_uri: TrackingOption = None,
) -> None:
    """Judge every stored nightly run whose horizon has passed against the outcomes the CRM now holds.

    Exit codes: 0 done, 2 bad input or no run past its horizon (nothing written), 4 done but a run is flagged
    (only with --fail-on-degradation), 1 anything unexpected.
    """
    from pipelines.backtest.run import run_backtest
    from pipelines.config import load_params

    with bad_input_exits():
        loaded = load_params(params)
        result = run_backtest(
            url or loaded.base.crm_url, scores_url, loaded, tracking_uri, rerun_all=rerun_all, mlflow=not no_mlflow
        )
    for _, row in result.rows.iterrows():
        typer.echo(
            f"run {row['run_id']} as of {row['as_of']:%Y-%m-%d} ({row['model_name']} v{row['model_version']}, "
            f"{row['leads']:,} leads): ROC-AUC {row['roc_auc']:.3f} ({row['roc_auc_ci_low']:.3f}-"
            f"{row['roc_auc_ci_high']:.3f}), observed/expected {row['obs_exp']:.2f} ({row['obs_exp_ci_low']:.2f}-"
            f"{row['obs_exp_ci_high']:.2f}); MQL list precision {row['mql_precision']:.3f} vs rule "
            f"{row['mql_rule_precision']:.3f} at equal volume; {row['status']}"
            + (f": {row['recommendation']}" if row["recommendation"] else "")
        )
    typer.echo(
        f"backtested {len(result.rows)} run(s) into {loaded.backtest.table}; {result.skipped} already done "
        f"(--all redoes them), {len(result.waiting)} waiting for their horizon; CRM data ends "
        f"{result.history_end:%Y-%m-%d %H:%M}Z"
    )
    if fail_on_degradation and len(result.degraded):
        raise typer.Exit(EXIT_DEGRADED)


@app.command("plan")
def plan(
    target_sql: Annotated[float | None, typer.Option("--target-sql", help="SQLs sales needs per period.")] = None,
    target_wins: Annotated[float | None, typer.Option("--target-wins", help="Won deals needed per period.")] = None,
    per: Annotated[str, typer.Option("--per", help="The target's period: week, month or quarter.")] = "month",
    campaign: Annotated[
        list[str] | None,
        typer.Option(
            "--campaign",
            help="Plan for this campaign (repeat for several; '(no campaign)' for leads without one); "
            "NAME=SHARE sets the mix (a share for every campaign).",
        ),
    ] = None,
    region: Annotated[
        list[str] | None, typer.Option("--region", help="Only leads of accounts in this region (repeatable).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON instead of a table.")] = False,
    url: Annotated[
        str | None,
        typer.Option("--url", envvar="LEADSCORE_DB_URL", help="CRM database (default: base.crm_url of the params)."),
    ] = None,
    scores_url: Annotated[
        str | None,
        typer.Option(
            "--scores-url",
            envvar="LEADSCORE_SCORES_URL",
            help="Database holding lead_scores and scoring_runs (default: the CRM database).",
        ),
    ] = None,
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """New leads and MQLs each campaign needs for a sales target, from the latest run's calibrated probabilities."""
    import json

    from pipelines.config import load_params
    from pipelines.plan.core import PlanInputError, Target, parse_mix, plan_section
    from pipelines.plan.run import run_plan

    with bad_input_exits():
        if (target_sql is None) == (target_wins is None):
            raise PlanInputError("give exactly one of --target-sql N or --target-wins N")
        names, mix = parse_mix(campaign or [])
        kind = "sql" if target_sql is not None else "wins"
        goal = Target(kind, float(target_sql if target_sql is not None else target_wins), per)  # type: ignore[arg-type]
        loaded = load_params(params)
        result = run_plan(url or loaded.base.crm_url, scores_url, loaded, goal, names, region or [], mix)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    section = plan_section(result)
    widths = [max(len(c), *(len(r[i]) for r in section.rows)) for i, c in enumerate(section.columns)]
    typer.echo(section.headline)
    typer.echo(f"(from run {result.run_id}, as of {result.as_of:%Y-%m-%d})")
    typer.echo("  ".join(c.ljust(w) for c, w in zip(section.columns, widths, strict=True)))
    for row in section.rows:
        typer.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))
    for note in section.notes:
        typer.echo(f"note: {note}")


@app.command("explain")
def explain(
    lead: Annotated[str, typer.Option("--lead", help="The lead: its lead_id (or an imported CRM's own id).")],
    url: Annotated[
        str | None,
        typer.Option("--url", envvar="LEADSCORE_DB_URL", help="CRM database (default: base.crm_url of the params)."),
    ] = None,
    model_uri: Annotated[
        str | None, typer.Option("--model-uri", help="Model to explain with (default: score.model_uri, the champion).")
    ] = None,
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="Features as of this UTC time, ISO format (default: now).")
    ] = None,
    params: ParamsOption = Path("params.yaml"),
    tracking_uri: TrackingOption = None,
) -> None:
    """Score one lead with reasons on demand (nightly scoring explains only the leads handed to a team).

    Exit codes: 0 done, 2 bad input (e.g. an unknown lead, or one not open at the as-of time), 1 anything else.
    """
    from pipelines.config import load_params
    from pipelines.score.explain import explain_lead
    from pipelines.score.run import parse_as_of

    with bad_input_exits():
        loaded = load_params(params)
        out = explain_lead(
            url or loaded.base.crm_url,
            lead,
            parse_as_of(as_of),
            loaded,
            model_uri or loaded.score.model_uri,
            tracking_uri,
        )
    typer.echo(
        f"lead {out['lead_id']} as of {out['as_of']:%Y-%m-%d %H:%M:%S}Z with {out['model_uri']}: "
        f"probability {out['probability']:.3f}, stage {out['stage']}, grade {out['grade']}"
        + ("; a rule MQL" if out["rule_mql"] else "")
    )
    for sign, key in (("+", "reasons_positive"), ("-", "reasons_negative")):
        for reason in out[key]:
            typer.echo(f"  {sign} {reason}")


@app.command("export")
def export(
    out: Annotated[Path, typer.Option("--out", help="File to write: .csv or .parquet (or set --format).")],
    scores_url: Annotated[
        str | None,
        typer.Option(
            "--scores-url",
            envvar="LEADSCORE_SCORES_URL",
            help="Database holding lead_scores and scoring_runs (default: base.crm_url of the params).",
        ),
    ] = None,
    shape: Annotated[
        str, typer.Option("--shape", help="Field names: generic, or salesforce (Id plus __c custom fields).")
    ] = "generic",
    fmt: Annotated[str | None, typer.Option("--format", help="csv or parquet (default: from the suffix).")] = None,
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Write the champion's latest complete run as a file a CRM imports: CRM id, 0-100 score, probability, grade,
    stage, reasons (atomic)."""
    from pipelines.config import load_params
    from pipelines.score.export import ExportError, run_export

    with bad_input_exits():
        if shape not in ("generic", "salesforce"):
            raise ExportError(f"--shape must be generic or salesforce, not {shape!r}")
        if fmt not in (None, "csv", "parquet"):
            raise ExportError(f"--format must be csv or parquet, not {fmt!r}")
        loaded = load_params(params)
        done = run_export(scores_url or loaded.base.crm_url, loaded.score.tables, out, shape, fmt)  # type: ignore[arg-type]
        typer.echo(
            f"exported {done['rows']:,} leads of run {done['run_id']} ({done['model_name']} "
            f"v{done['model_version']}, as of {done['as_of']:%Y-%m-%d %H:%M}Z) to {out} ({done['format']}, "
            f"{done['shape']} fields)"
        )


@app.command("report")
def report(
    features: FeaturesDirOption,
    models: ModelsDirOption,
    rules: Annotated[Path, typer.Option("--rules", help="Rule scores Parquet of the same snapshots.")],
    raw: Annotated[Path, typer.Option("--raw", help="The CRM snapshot folder (campaign names).")],
    out: Annotated[Path, typer.Option("--out", help="The HTML page to write.")] = Path("reports/mql_comparison.html"),
    metrics: Annotated[
        Path,
        typer.Option(
            "--metrics", help="The evaluate stage's metrics of the same test slice (the headline and the rule table)."
        ),
    ] = Path("metrics/evaluate.json"),
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            envvar="LEADSCORE_DB_URL",
            help="CRM database for the nightly run's lead attributes (default: base.crm_url).",
        ),
    ] = None,
    scores_url: Annotated[
        str | None,
        typer.Option(
            "--scores-url",
            envvar="LEADSCORE_SCORES_URL",
            help="Database holding lead_scores, scoring_runs and the backtests (default: the CRM database).",
        ),
    ] = None,
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Marketers' report: predicted vs rule MQLs on the test period and the latest nightly run, the backtest trend
    and the plan for report.plan_target_sql, one HTML page."""
    from pipelines.config import load_params
    from pipelines.report.stage import run_report

    with bad_input_exits():
        loaded = load_params(params)
        crm_url = url or loaded.base.crm_url
        summary = run_report(loaded, features, models, rules, raw, scores_url or crm_url, crm_url, out, metrics)
        nightly = summary["nightly_run"] or "no nightly run yet"
        typer.echo(f"report in {out}: {summary['test_rows']:,} test rows; latest nightly run: {nightly}")


def main() -> None:
    """Console-script entry point: an unexpected error is one line on stderr and exit 1 (`-v`: the traceback)."""
    quiet_third_party_warnings()
    try:
        app()
    except Exception as exc:
        log.debug("unexpected error", exc_info=True)
        lines = str(exc).strip().splitlines()
        typer.echo(
            f"error: unexpected {type(exc).__name__}: {lines[0] if lines else '(no message)'} (a bug or the "
            "environment; rerun with -v for the traceback)",
            err=True,
        )
        sys.exit(1)
