"""The real `refine-af` command: bad input gives one line and exit 2, and touches nothing."""

import json

import pytest
from helpers import cli, start_moto

GOOD = {"id": "t", "name": "n", "instruction": "Name a color you like and say why.",
        "instances": [{"input": "", "output": "Blue, it is calm."}], "is_classification": False}


@pytest.fixture(scope="module")
def done_run(tmp_path_factory, builtin_dir):
    """A run whose instructions stage finished, made quickly: the builtin model, two prompts, two instructions."""
    run = tmp_path_factory.mktemp("runs") / "r"
    res = cli("run", "--stages", "instructions", "--run", str(run), "--set", "instructions.prompts_per_round=2",
              "--set", "instructions.target=2", "--set", "instructions.classify=false",
              "--set", "instructions.max_new_tokens=48")
    assert res.returncode == 0, res.stderr
    return run


def _assert_clean_error(res, *fragments):
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("error: "), res.stderr
    assert "Traceback" not in res.stderr
    for f in fragments:
        assert f in lines[-1], (f, lines[-1])


def _snapshot(run):
    return {p.relative_to(run).as_posix(): p.read_bytes() for p in run.rglob("*") if p.is_file()}


def test_show_lists_states(done_run):
    run = done_run
    res = cli("show", "--run", str(run))
    assert res.returncode == 0 and res.stdout.split()[:2] == ["instructions", "done"]
    rows = json.loads(cli("show", "--run", str(run), "--json").stdout)
    assert rows[0]["counts"]["accepted"] == 2


def test_rerun_skips_and_stage_command_matches(done_run):
    run = done_run
    res = cli("stage", "instructions", "--run", str(run))  # what a pod runs: config from the run root
    assert res.returncode == 0 and "instructions: skipped" in res.stdout, res.stderr


@pytest.mark.parametrize(("content", "fragments"), [
    (json.dumps(GOOD) + "\n{oops\n", ["seeds.jsonl:2: not valid JSON"]),
    (json.dumps({k: v for k, v in GOOD.items() if k != "instances"}) + "\n", ["seeds.jsonl:1:instances: missing"]),
    ("", ["no seed tasks"]),
])
def test_bad_seeds_touch_nothing(done_run, tmp_path, content, fragments):
    run = done_run
    before = _snapshot(run)
    bad = tmp_path / "seeds.jsonl"
    bad.write_text(content)
    _assert_clean_error(cli("stage", "instructions", "--run", str(run), "--set", f"seeds={bad}"), *fragments)
    assert _snapshot(run) == before


def test_missing_model_touches_nothing(done_run):
    run = done_run
    before = _snapshot(run)
    _assert_clean_error(cli("stage", "instructions", "--run", str(run), "--set", "model=/no/such/model"),
                        "model '/no/such/model'", "does not exist")
    assert _snapshot(run) == before


def test_config_errors(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("instructions:\n  targte: 4\n")
    _assert_clean_error(cli("run", "--config", str(cfg), "--run", str(tmp_path / "r")),
                        "run.yaml", "instructions.targte: unknown key")
    _assert_clean_error(cli("run", "--run", str(tmp_path / "r"), "--set", "instructions.nope=1"),
                        "'nope' is not a key of instructions")
    _assert_clean_error(cli("run", "--stages", "nosuch", "--run", str(tmp_path / "r")), "unknown stage 'nosuch'")
    assert not (tmp_path / "r" / "instructions").exists()


def test_unwritable_run_directory():
    _assert_clean_error(cli("run", "--run", "/proc/refine-af/run"), "is not writable")


def test_s3_errors(s3_env):
    _assert_clean_error(cli("run", "--run", "s3://absent-bucket/runs/x"), "bucket 'absent-bucket' does not exist")
    _assert_clean_error(cli("show", "--run", "s3://b/x", env={"AWS_ENDPOINT_URL": "http://127.0.0.1:9"},
                            timeout=120), "cannot reach the S3 endpoint")
    proc, url = start_moto({"INITIAL_NO_AUTH_ACTION_COUNT": "0"})
    try:
        _assert_clean_error(cli("run", "--run", "s3://b/x", env={"AWS_ENDPOINT_URL": url}), "check the credentials")
    finally:
        proc.terminate()


def test_stage_needs_its_config(tmp_path):
    _assert_clean_error(cli("stage", "instructions", "--run", str(tmp_path / "empty")), "has no config.yaml")


@pytest.mark.parametrize("args,fragments", [
    (["stage", "instructionz"], ["unknown stage 'instructionz'"]),
    (["stage", "instances-self-instruct", "--shard", "3/2"], ["--shard '3/2'", "0 <= i < N"]),
    (["stage", "instances-self-instruct", "--shard", "x"], ["--shard 'x'"]),
    (["stage", "instances-self-instruct", "--shard", "0/2", "--merge"], ["exclude each other"]),
    (["stage", "sft-self-instruct", "--shard", "0/2"], ["is not sharded"]),
])
def test_stage_arguments_are_checked_before_anything_is_written(done_run, args, fragments):
    before = _snapshot(done_run)
    _assert_clean_error(cli(*args, "--run", str(done_run)), *fragments)
    assert _snapshot(done_run) == before


def test_init_saves_the_config_and_tells_argo_the_graph(tmp_path):
    out = tmp_path / "outputs"
    res = cli("init", "--run", "", "--run-root", str(tmp_path / "runs"), "--name", "wf-1", "--set",
              "evaluate.include_base=false", "--set", "instances.shards=3", env={"REFINE_AF_OUTPUTS": str(out)})
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "runs" / "wf-1" / "config.yaml").is_file()
    values = {p.name: p.read_text() for p in out.iterdir()}
    assert values == {"run": str(tmp_path / "runs" / "wf-1"), "key": str(tmp_path / "runs" / "wf-1"),
                      "enabled-evaluate-base": "false", "shards-instances": "3", "shards-evaluate": "1"}
    _assert_clean_error(cli("init", "--run", ""), "give --run, or --run-root and --name")
    _assert_clean_error(cli("init", "--run", str(tmp_path / "x"), "--set", "rl.stepz=1"), "rl.stepz")
    assert not (tmp_path / "x").exists()


def test_a_pod_hands_argo_its_figures_and_links(done_run, tmp_path):
    out = tmp_path / "outputs"
    res = cli("stage", "instructions", "--run", str(done_run), env={"REFINE_AF_OUTPUTS": str(out)})
    assert res.returncode == 0 and "instructions: skipped" in res.stdout, res.stderr
    manifest = json.loads((done_run / "instructions" / "manifest.json").read_text())
    assert (out / "accepted").read_text() == str(manifest["counts"]["accepted"]) == "2"
    assert (out / "acceptance-rate").read_text() == json.dumps(manifest["metrics"]["acceptance_rate"])
    assert (out / "artifacts" / "manifest.json").read_bytes() == (done_run / "instructions" / "manifest.json"
                                                                   ).read_bytes()
