"""The `refine-af` command line: thin, it parses, builds the config and calls the runner.

    refine-af run                                              # the whole pipeline, builtin model, ./runs/default
    refine-af run --stages instructions --set instructions.target=40
    refine-af run --config configs/cluster.yaml --run s3://bucket/runs/exp1
    refine-af stage instructions --run s3://bucket/runs/exp1   # one stage, exactly as an Argo pod runs it
    refine-af show --run runs/default                          # each stage's state, counts and metrics

Errors in the user's input or environment print one line and exit with status 2.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
import warnings
from typing import Annotated

import typer

from refine_af.config import RunConfig, load_config
from refine_af.errors import RefineError

app = typer.Typer(add_completion=False, no_args_is_help=False, pretty_exceptions_enable=False,
                  help="REFINE-AF: instruction data from a small open LLM, refined with RL from automated feedback.")

ConfigOpt = Annotated[str | None, typer.Option("--config", "-c", help="Run config YAML.")]
RunOpt = Annotated[str | None, typer.Option("--run", help="Run location: a directory, file://... or s3://...")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Override a config key: section.key=value.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Rerun even when the stage's manifest is current.")]


def _user_errors(fn):
    """One line and exit status 2 for RefineError; anything else is a bug and keeps its traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except RefineError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None

    return wrapper


def _config(config: str | None, run: str | None, overrides: list[str] | None) -> RunConfig:
    items = list(overrides or [])
    if run:
        items.append(f"run={run}")
    return load_config(config, items)


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s", stream=sys.stderr)
    for noisy in ("httpx", "urllib3", "botocore", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # peft asks transformers a deprecated question on every adapter load; the user can do nothing about it
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


@app.command()
@_user_errors
def run(config: ConfigOpt = None, run: RunOpt = None, set_: SetOpt = None, force: ForceOpt = False,
        stages: Annotated[str | None, typer.Option(help="Comma-separated stages to run (default: all).")] = None
        ) -> None:
    """Run the stage graph locally (stages whose manifest is current are skipped)."""
    from refine_af.runner import run_pipeline

    cfg = _config(config, run, set_)
    names = [s.strip() for s in stages.split(",") if s.strip()] if stages else None
    outcomes = run_pipeline(cfg, names, force=force)
    typer.echo(f"run {cfg.run}: " + ", ".join(f"{k} {v}" for k, v in outcomes.items()))
    if outcomes.get("compare") in ("done", "skipped"):  # not after --stages without compare: it may be stale
        _headline(cfg)


def _headline(cfg: RunConfig) -> None:
    """The paper's comparison in one line, from the run's compare stage."""
    from refine_af.compare import headline
    from refine_af.store import open_store, read_json

    typer.echo(headline(read_json(open_store(cfg.run, cfg.s3, check=False), "compare/report.json")))
    typer.echo(f"report: {cfg.run.rstrip('/')}/compare/report.md")


@app.command()
@_user_errors
def stage(name: Annotated[str, typer.Argument(help="Stage name, as in `refine-af show`.")],
          run: Annotated[str, typer.Option("--run", help="Run location.")],
          config: ConfigOpt = None, set_: SetOpt = None, force: ForceOpt = False) -> None:
    """Run one stage against a run location, exactly as its Argo pod does."""
    from refine_af.runner import load_run_config, run_stage, save_run_config
    from refine_af.store import open_store

    if config:
        cfg = _config(config, run, set_)
        store = open_store(cfg.run, cfg.s3)
        save_run_config(store, cfg)
    else:  # a pod: the config saved at the run root, with the S3 settings from the environment
        store = open_store(run, load_config(None, [i for i in (set_ or []) if i.startswith("s3.")]).s3)
        cfg = load_run_config(store, [*(set_ or []), f"run={run}"])
    typer.echo(f"{name}: {run_stage(cfg, name, store, force=force)}")


@app.command()
@_user_errors
def show(run: Annotated[str, typer.Option("--run", help="Run location.")] = "runs/default",
         set_: SetOpt = None,
         as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """List each stage's state (done / partial / not started) with its counts and metrics."""
    from refine_af.runner import show as show_rows
    from refine_af.store import open_store

    cfg = load_config(None, set_ or [])
    rows = show_rows(open_store(run, cfg.s3, check=True))
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    width = max(len(row["stage"]) for row in rows)
    for row in rows:
        detail = ", ".join(f"{k}={v}" for k, v in _flat({**row["counts"], **row["metrics"]}).items())
        typer.echo(f"{row['stage']:<{width}}  {row['state']:<12} {detail}")


def _flat(values: dict, prefix: str = "") -> dict:
    """Nested metrics (per-term rewards, wins per arm) as dotted keys: terms_last5.coherence=0.57."""
    out = {}
    for k, v in values.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def main() -> None:  # pragma: no cover
    app()


from refine_af.argo.commands import register as _register_cluster_commands  # noqa: E402

_register_cluster_commands(app)
