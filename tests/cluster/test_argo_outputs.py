"""What a pod reports to Argo: metric values from the manifest, and progress."""

from __future__ import annotations

from refine_af import progress
from refine_af.argo.outputs import init_values, metric_values
from refine_af.config import load_config
from refine_af.pipeline import stage


def test_metric_values_are_text_and_missing_ones_empty():
    manifest = {"metrics": {"reward_first5": 1.5, "reward_last5": 2.0, "kl_final": 0.3}, "counts": {}}
    values = metric_values(stage("rl"), manifest)
    assert values == {"reward-first5": "1.5", "reward-last5": "2.0", "kl-final": "0.3", "probe-delta": ""}
    compare = metric_values(stage("compare"), {"metrics": {"share_won": 0.25, "mean": {"refine-af": 40.1,
                                                                                       "self-instruct": 42.0}}})
    assert compare == {"share-won": "0.25", "mean-refine-af": "40.1", "mean-self-instruct": "42.0"}


def test_init_values_name_every_switch_and_fan_out():
    values = init_values(load_config(None, ["evaluate.shards=4"]), "s3://b/runs/x", "runs/x")
    assert values == {"run": "s3://b/runs/x", "key": "runs/x", "enabled-evaluate-base": "true",
                      "shards-evaluate": "4", "shards-instances": "1"}


def test_progress_goes_to_the_file_argo_names(tmp_path, monkeypatch):
    path = tmp_path / "progress"
    progress.report(3, 10)  # no ARGO_PROGRESS_FILE: nothing, no error
    monkeypatch.setenv("ARGO_PROGRESS_FILE", str(path))
    progress.report(3, 10)
    assert path.read_text() == "3/10\n"
    progress.report(12, 10)
    assert path.read_text() == "10/10\n"
