"""The instructions stage end to end with the builtin model: target met, no near-duplicates, killed and resumed,
skipped when current, and the same layout in S3. Minutes on 2 cores, so marked slow."""

import itertools
import json
import re
import signal
import subprocess
import time

import pytest
from helpers import cli, refine_af_exe
from rouge_score import rouge_scorer

pytestmark = pytest.mark.slow


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_target_resume_and_skip(tmp_path, seed_file, builtin_dir):
    run = tmp_path / "run"
    args = ["run", "--stages", "instructions", "--run", str(run), "--set", f"seeds={seed_file}",
            "--set", "instructions.target=40", "--set", "instructions.prompts_per_round=2"]

    # 1. SIGKILL once the first round's checkpoint is written.
    first = run / "instructions" / "rounds" / "00001.jsonl"
    proc = subprocess.Popen([refine_af_exe(), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert first.exists(), "no checkpoint before the deadline"
    assert not (run / "instructions" / "manifest.json").exists()
    checkpointed = [r for r in _rows(first) if r["status"] == "accepted"]

    # 2. The same command resumes after that round and ends with exactly 40.
    res = cli(*args)
    assert res.returncode == 0, res.stderr
    assert "resuming after round" in res.stdout
    rows = _rows(run / "instructions" / "instructions.jsonl")
    texts = [r["instruction"] for r in rows]
    assert len(texts) == 40 and len(set(texts)) == 40
    assert texts[: len(checkpointed)] == [r["instruction"] for r in checkpointed]  # kept, not redone

    # No accepted instruction exceeds ROUGE-L 0.7 against another one or any seed, by the reference package.
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    seeds = [json.loads(line)["instruction"] for line in seed_file.read_text().splitlines() if line.strip()]
    for a, b in itertools.combinations(texts, 2):
        assert scorer.score(a, b)["rougeL"].fmeasure <= 0.7, (a, b)
    for a in texts:
        assert max(scorer.score(s, a)["rougeL"].fmeasure for s in seeds) <= 0.7, a
    manifest = json.loads((run / "instructions" / "manifest.json").read_text())
    assert manifest["counts"]["accepted"] == 40 and manifest["resumed"] is True
    assert sum(manifest["counts"]["rejected_by_reason"].values()) == manifest["counts"]["rejected"]
    for r in _rows(run / "instructions" / "rejected.jsonl"):
        assert r["reason"] and "nearest" in r and "nearest_rouge_l" in r

    # 3. A third run skips the stage.
    res = cli(*args)
    assert res.returncode == 0 and "instructions skipped" in res.stdout, res.stdout + res.stderr


def test_same_layout_in_s3(tmp_path, s3_env, builtin_dir):
    bucket = s3_env()
    common = ["--stages", "instructions", "--set", "instructions.target=6", "--set", "instructions.prompts_per_round=2"]
    local = tmp_path / "local"
    assert cli("run", "--run", str(local), *common).returncode == 0
    res = cli("run", "--run", f"s3://{bucket}/runs/x", *common)
    assert res.returncode == 0, res.stderr
    keys = sorted(o["Key"].removeprefix("runs/x/") for o in s3_env.client.list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == sorted(p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file())
    body = s3_env.client.get_object(Bucket=bucket, Key="runs/x/instructions/instructions.jsonl")["Body"].read()
    assert body == (local / "instructions" / "instructions.jsonl").read_bytes()  # same seed, same model, same data
    show = cli("show", "--run", f"s3://{bucket}/runs/x")
    assert show.returncode == 0 and re.search(r"^instructions +done", show.stdout, re.M), show.stdout
