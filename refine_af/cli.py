"""The `refine-af` command line: thin, it parses, builds the config and calls the runner.

    refine-af run                                              # the whole pipeline, builtin model, ./runs/default
    refine-af run --stages instructions --set instructions.target=40
    refine-af run --preset llama2-7b --config my-cluster.yaml --run s3://bucket/runs/exp1
    refine-af stage instructions --run s3://bucket/runs/exp1   # one stage, exactly as an Argo pod runs it
    refine-af stage instances-refine-af --run URI --shard 0/4  # one shard of a sharded stage; --merge merges them
    refine-af show --run runs/default                          # each stage's state, counts and metrics
    refine-af render --set instances.shards=8                  # the Argo WorkflowTemplate + a Workflow running it

Errors in the user's input or environment print one line and exit with status 2.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import os
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
PresetOpt = Annotated[str | None, typer.Option(
    "--preset", help="Start from a packaged config: cpu (the default), cpu-independent, llama2-7b, llama2-13b, "
                     "mistral-7b, ... (`refine-af presets` lists them); --config and --set apply on top.")]
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


def _config(config: str | None, run: str | None, overrides: list[str] | None, preset: str | None = None
            ) -> RunConfig:
    items = list(overrides or [])
    if run:
        items.append(f"run={run}")
    return load_config(config, items, preset=preset)


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s", stream=sys.stderr)
    for noisy in ("httpx", "urllib3", "botocore", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # TRL maps the SFT dataset five times, each with a bar of its own; the stages log their own progress
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    # peft asks transformers a deprecated question on every adapter load; the user can do nothing about it
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


@app.command()
@_user_errors
def run(config: ConfigOpt = None, run: RunOpt = None, set_: SetOpt = None, force: ForceOpt = False,
        stages: Annotated[str | None, typer.Option(help="Comma-separated stages to run (default: all).")] = None,
        preset: PresetOpt = None) -> None:
    """Run the stage graph locally (stages whose manifest is current are skipped)."""
    from refine_af.runner import run_pipeline

    cfg = _config(config, run, set_, preset)
    names = [s.strip() for s in stages.split(",") if s.strip()] if stages else None
    outcomes = run_pipeline(cfg, names, force=force)
    typer.echo(f"run {cfg.run}: " + ", ".join(f"{k} {v}" for k, v in outcomes.items()))
    if outcomes.get("compare") in ("done", "skipped"):  # not after --stages without compare: it may be stale
        _headline(cfg)


def _headline(cfg: RunConfig) -> None:
    """The paper's comparison in one line, from the run's compare stage."""
    from refine_af.compare import headline
    from refine_af.schemas import ReportFile, parse_json
    from refine_af.store import open_store, read_required

    store = open_store(cfg.run, cfg.s3, check=False)
    report = read_required(store, "compare/report.json", "does not exist: run the compare stage")
    parse_json(report, f"{store.uri}/compare/report.json", ReportFile)
    typer.echo(headline(json.loads(report)))
    typer.echo(f"report: {cfg.run.rstrip('/')}/compare/report.md")


def _shard(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    i, sep, n = value.partition("/")
    if not (sep and i.isdigit() and n.isdigit() and 0 <= int(i) < int(n)):
        raise RefineError(f"--shard {value!r}: expected i/N with 0 <= i < N, for example --shard 0/4")
    return int(i), int(n)


@app.command()
@_user_errors
def stage(name: Annotated[str, typer.Argument(help="Stage name, as in `refine-af show`.")],
          run: Annotated[str, typer.Option("--run", help="Run location.")],
          config: ConfigOpt = None, set_: SetOpt = None, force: ForceOpt = False,
          shard: Annotated[str | None, typer.Option(help="Compute shard i/N of a sharded stage only.")] = None,
          merge: Annotated[bool, typer.Option("--merge", help="Merge the finished shards of a sharded stage.")]
          = False) -> None:
    """Run one stage against a run location, exactly as its Argo pod does."""
    from refine_af.argo import outputs
    from refine_af.pipeline import stage as find_stage
    from refine_af.runner import load_run_config, run_stage, save_run_config
    from refine_af.store import open_store

    s, part = find_stage(name), _shard(shard)  # bad names and shards fail before the store is touched
    if part and merge:
        raise RefineError("--shard and --merge exclude each other: a shard computes, the merge combines")
    if config:
        cfg = _config(config, run, set_)
        store = open_store(cfg.run, cfg.s3)
        save_run_config(store, cfg)
    else:  # a pod: the config saved at the run root, with the S3 settings from the environment
        store = open_store(run, load_config(None, [i for i in (set_ or []) if i.startswith("s3.")]).s3)
        cfg = load_run_config(store, [*(set_ or []), f"run={run}"])
    outcome = run_stage(cfg, name, store, force=force, shard=part, merge_only=merge)
    if (out := outputs.directory()) and outcome in ("done", "skipped"):
        outputs.write_stage_outputs(s, store, out)
    typer.echo(f"{name}: {outcome}")


@app.command()
@_user_errors
def init(config: ConfigOpt = None, set_: SetOpt = None,
         run: Annotated[str, typer.Option("--run", help="Run location; empty: <run-root>/<name>.")] = "",
         run_root: Annotated[str | None, typer.Option(help="Where runs live, e.g. s3://bucket/runs.")] = None,
         name: Annotated[str | None, typer.Option(help="The run's id under --run-root (the workflow's name).")]
         = None) -> None:
    """Validate a run config and save it at the run location: the first task of the Argo workflow."""
    from refine_af.argo import outputs
    from refine_af.runner import save_run_config
    from refine_af.store import open_store

    if not run:
        if not (run_root and name):
            raise RefineError("init: give --run, or --run-root and --name")
        run = f"{run_root.rstrip('/')}/{name}"
    cfg = _config(config, run, set_)
    store = open_store(cfg.run, cfg.s3)
    save_run_config(store, cfg)
    if out := outputs.directory():
        key = cfg.run.removeprefix("s3://").partition("/")[2] if cfg.run.startswith("s3://") else cfg.run
        outputs.write_values(outputs.init_values(cfg, cfg.run, key), out)
    typer.echo(f"run {cfg.run}: config saved")


@app.command("presets")
def list_presets() -> None:
    """List the packaged presets (`--preset NAME`) with what each is for."""
    from refine_af.config import PRESETS, presets

    for name in presets():
        head = itertools.takewhile(lambda line: line.startswith("#") and line.strip() != "#",
                                   (PRESETS / f"{name}.yaml").read_text().splitlines())  # the first paragraph
        about = " ".join(line.lstrip("# ") for line in head)
        typer.echo(f"{name:<16} {about.removeprefix(name + ':').strip()}")


@app.command()
@_user_errors
def render(config: ConfigOpt = None, set_: SetOpt = None,
           template_only: Annotated[bool, typer.Option("--template-only", help="Only the WorkflowTemplate.")]
           = False, preset: PresetOpt = None) -> None:
    """Print the Argo WorkflowTemplate and a Workflow that runs it with this config (YAML, two documents)."""
    from refine_af.argo.compile import render as compile_workflow
    from refine_af.argo.compile import to_yaml

    template, workflow = compile_workflow(load_config(config, set_ or [], preset=preset))
    typer.echo(to_yaml([template] if template_only else [template, workflow]), nl=False)


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
