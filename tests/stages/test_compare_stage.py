"""Stage compare on hand-made evaluate scores: wins and shares by hand, the report files, the CLI headline."""

import json

import pytest
from helpers import finished_stage
from typer.testing import CliRunner

from refine_af.cli import app
from refine_af.compare import compare_arms, headline
from refine_af.config import load_config
from refine_af.errors import RefineError
from refine_af.runner import read_manifest, run_stage
from refine_af.store import FileStore, read_json

A, B, BASE = "refine-af", "self-instruct", "base"
CATEGORY = {"t1": "Title Generation", "t2": "Title Generation", "t3": "Coreference Resolution",
            "t4": "Coreference Resolution", "t5": "Textual Entailment", "t6": "Textual Entailment"}
ROUGE = {  # A wins t1, t4, t5, t6; B wins t3; t2 is a tie
    A: {"t1": 50.0, "t2": 40.0, "t3": 30.0, "t4": 10.0, "t5": 20.0, "t6": 35.0},
    B: {"t1": 40.0, "t2": 40.0, "t3": 35.0, "t4": 9.5, "t5": 10.0, "t6": 30.0},
    BASE: {"t1": 5.0, "t2": 15.0, "t3": 25.0, "t4": 0.0, "t5": 10.0, "t6": 20.0},
}
EXACT = {A: 0.0, B: 100.0, BASE: 50.0}  # by exact match, self-instruct wins every task
USER = {A: {"exact_match": 10.0, "rougeL": 31.5, "n": 4}, B: {"exact_match": 0.0, "rougeL": 28.25, "n": 4},
        BASE: None}
SETTINGS = {"superni": "builtin", "split": "default", "max_tasks": 6, "max_instances_per_task": 4,
            "num_pos_examples": 0, "user_oriented": "builtin", "max_user_oriented": None, "max_new_tokens": 48,
            "include_base": True}


def _scores(arm, **settings):
    per_task = {t: {"exact_match": EXACT[arm], "rougeL": r, "n": 4, "category": CATEGORY[t]}
                for t, r in ROUGE[arm].items()}
    user = USER[arm] and {"overall": USER[arm], "per_task": {}, "per_category": {}, "missing": 0}
    return {"arm": arm, "model": "tiny", "adapter": None, "evaluate": {**SETTINGS, **settings},
            "superni": {"overall": {"exact_match": 0.0, "rougeL": 0.0, "n": 24}, "per_task": per_task,
                        "per_category": {}, "missing": 0},
            "user_oriented": user}


DECONTAMINATION = {  # what instances-<arm> writes: refine-af dropped 3 training instances, self-instruct none
    A: {"enabled": True, "threshold": 0.7, "checked": 40, "dropped": 3, "by_task": {"superni/t1": 2, "superni/t5": 1},
        "eval_sets": {"superni": {"location": "builtin", "tasks": 6}, "user_oriented": None}, "rows": [{"x": 1}] * 3},
    B: {"enabled": True, "threshold": 0.7, "checked": 38, "dropped": 0, "by_task": {}, "eval_sets": {}, "rows": []},
}


def _run(tmp_path, arms=(A, B, BASE), decontamination=DECONTAMINATION, **overrides):
    """A run store where evaluate-<arm> is done for `arms` and instances-<arm> for the training arms; overrides replace
    an arm's scores.json content."""
    store = FileStore(str(tmp_path / "run"))
    for arm in arms:
        finished_stage(store, f"evaluate-{arm}", {"scores.json": overrides.get(arm.replace("-", "_"), _scores(arm))},
                       fingerprint=f"fp-{arm}")
    for arm in (A, B):
        finished_stage(store, f"instances-{arm}", {"decontamination.json": decontamination[arm]},
                       fingerprint=f"fi-{arm}")
    return store


def _config(store, *extra):
    return load_config(None, [f"run={store.root}", "seed=3", "compare.n_boot=200", *extra])


def test_report_matches_hand_computation(tmp_path):
    store = _run(tmp_path)
    assert run_stage(_config(store), "compare", store) == "done"
    report = read_json(store, "compare/report.json")
    assert report["arms"] == [A, B] and report["base"] == BASE and report["metric"] == "rougeL"
    assert report["n_tasks"] == 6
    assert report["wins"] == {A: 4, B: 1, "tie": 1}
    assert report["share"][A] == pytest.approx(4 / 6) and report["share_of_decided"][A] == pytest.approx(4 / 5)
    assert report["sign_test"]["p"] == 12 / 32  # 4 wins, 1 loss: 2 * (1 + 5) / 2^5
    assert [(t["decided"], t["sign_test_p"]) for t in report["by_tolerance"]] == [(5, 12 / 32), (4, 10 / 16)]
    assert report["means"][A]["mean"] == pytest.approx(185 / 6)
    assert report["means"][B]["mean"] == pytest.approx(164.5 / 6)
    assert report["means"][BASE]["mean"] == pytest.approx(12.5)
    assert report["mean_diff"]["mean"] == pytest.approx(20.5 / 6)
    assert report["bootstrap"]["seed"] == 3 and report["bootstrap"]["n"] == 200
    cats = {c["category"]: c for c in report["per_category"]}
    assert cats["Textual Entailment"]["wins"] == {A: 2, B: 0, "tie": 0}
    assert cats["Title Generation"]["means"] == {A: 45.0, B: 40.0, BASE: 10.0}
    assert report["user_oriented"] == USER
    assert report["sources"][BASE] == f"{store.uri}/evaluate-base/scores.json"
    assert report["decontamination"][A] == {k: v for k, v in DECONTAMINATION[A].items() if k != "rows"}
    assert report["decontamination"][B]["dropped"] == 0

    md = store.read_bytes("compare/report.md").decode()
    assert "**refine-af wins on 4 of 6 tasks (66.7%" in md
    assert "over the 5 decided tasks): p = 0.38." in md and "| 1 | 4 | 3 | 1 | 2 | 0.62 |" in md
    assert "## User-oriented instructions" in md and "| refine-af | 31.50 | 10.00 | 4 |" in md
    assert "| base (reference) | – | – | 0 |" in md
    assert "## Decontamination" in md and "| refine-af | 40 | 3 | 0.7 | superni/t1 (2), superni/t5 (1) |" in md
    assert "| self-instruct | 38 | 0 | 0.7 | none |" in md
    assert store.read_bytes("compare/report.png").startswith(b"\x89PNG\r\n\x1a\n")

    manifest = read_manifest(store, "compare")
    assert manifest["metrics"]["share_won"] == round(4 / 6, 4)
    assert manifest["metrics"]["wins"] == {A: 4, B: 1, "tie": 1}
    assert manifest["metrics"]["mean"] == {A: round(185 / 6, 2), B: round(164.5 / 6, 2), BASE: 12.5}
    assert manifest["parents"] == {**{f"evaluate-{a}": f"fp-{a}" for a in (A, B, BASE)},
                                   **{f"instances-{a}": f"fi-{a}" for a in (A, B)}}
    assert manifest["counts"]["contaminated"] == {A: 3, B: 0}
    assert run_stage(_config(store), "compare", store) == "skipped"


def test_metric_and_tolerance_come_from_config(tmp_path):
    store = _run(tmp_path)
    run_stage(_config(store, "compare.metric=exact_match"), "compare", store)
    assert read_json(store, "compare/report.json")["wins"] == {A: 0, B: 6, "tie": 0}
    run_stage(_config(store, "compare.tie_tolerance=1"), "compare", store)  # t4 (10 vs 9.5) becomes a tie
    assert read_json(store, "compare/report.json")["wins"] == {A: 3, B: 1, "tie": 2}


def test_without_base(tmp_path):
    store = _run(tmp_path, arms=(A, B))
    config = _config(store, "evaluate.include_base=false")
    assert run_stage(config, "evaluate-base", store) == "disabled"
    assert run_stage(config, "compare", store) == "done"
    report = read_json(store, "compare/report.json")
    assert report["base"] is None and set(report["means"]) == {A, B} and set(report["user_oriented"]) == {A, B}
    assert report["wins"] == {A: 4, B: 1, "tie": 1}
    assert "(reference)" not in store.read_bytes("compare/report.md").decode()
    assert read_manifest(store, "compare")["parents"]["evaluate-base"] == "disabled"


def test_arms_scored_differently_are_refused(tmp_path):
    store = _run(tmp_path, self_instruct=_scores(B, max_tasks=3))
    with pytest.raises(RefineError, match="the refine-af and self-instruct arms .*evaluate.max_tasks"):
        run_stage(_config(store), "compare", store)
    assert store.list("compare") == []
    # include_base has no bearing on the scores: no refusal for it
    store = _run(tmp_path / "other", self_instruct=_scores(B, include_base=False))
    assert run_stage(_config(store), "compare", store) == "done"


def _broken(edit):
    scores = _scores(B)
    edit(scores)
    return json.dumps(scores).encode()


@pytest.mark.parametrize("content, fragment", [
    (b"{not json", "scores.json:1: not valid JSON"),
    (_broken(lambda s: s["superni"].pop("per_task")), "scores.json:superni.per_task: missing"),
    (_broken(lambda s: s["superni"]["per_task"]["t1"].update(rougeL="high")),
     "scores.json:superni.per_task.t1.rougeL: must be a number, got a string"),
], ids=["invalid-json", "no-per-task", "non-numeric"])
def test_bad_scores_file(tmp_path, content, fragment):
    store = _run(tmp_path, self_instruct=content)
    with pytest.raises(RefineError) as err:
        run_stage(_config(store), "compare", store)
    assert "evaluate-self-instruct/scores.json" in str(err.value) and fragment in str(err.value)
    assert store.list("compare") == []


def test_decontamination_off_and_missing(tmp_path):
    off = {**DECONTAMINATION, B: {"enabled": False, "threshold": 0.7, "checked": 0, "eval_sets": None}}
    store = _run(tmp_path, decontamination=off)
    assert run_stage(_config(store), "compare", store) == "done"
    assert read_json(store, "compare/report.json")["decontamination"][B]["enabled"] is False
    assert "| self-instruct | – | – | – | off: not checked |" in store.read_bytes("compare/report.md").decode()
    assert read_manifest(store, "compare")["counts"]["contaminated"] == {A: 3}
    store.delete("instances-self-instruct/decontamination.json")
    with pytest.raises(RefineError, match="decontamination.json: does not exist: run the instances-self-instruct"):
        run_stage(_config(store, "compare.n_boot=100"), "compare", store)


def test_headline():
    tasks = [f"t{i:02}" for i in range(12)]
    b = {t: 21.4 for t in tasks}
    a = {t: 20.4 for t in tasks[:4]} | {tasks[4]: 21.4} | {t: (277.2 - 21.4 - 81.6) / 7 for t in tasks[5:]}
    base = {t: 19.0 for t in tasks}
    report = compare_arms({A: a, B: b, BASE: base}, A, B, base=BASE, n_boot=50)
    assert headline(report) == (
        "REFINE-AF beats Self-Instruct on 7 of 12 SuperNI tasks (58%), loses 4, 1 tie, sign test p = 0.55; "
        "mean ROUGE-L 23.1 vs 21.4 (base 19.0)"
    )
    report = compare_arms({A: a, B: b}, A, B, n_boot=50, tie_tolerance=1.5, metric="exact_match")
    assert headline(report, tasks="tasks") == (
        "REFINE-AF beats Self-Instruct on 7 of 12 tasks (58%), loses 0, 5 ties, sign test p = 0.016; "
        "mean exact match 23.1 vs 21.4"
    )
    report = compare_arms({"x": {"t": 1.0}, "y": {"t": 2.0}}, "x", "y", n_boot=10)
    assert headline(report) == ("x beats y on 0 of 1 SuperNI tasks (0%), loses 1, 0 ties, sign test p = 1; "
                                "mean ROUGE-L 1.0 vs 2.0")


def test_cli_run_prints_the_headline(tmp_path):
    store = _run(tmp_path)
    runner = CliRunner()
    res = runner.invoke(app, ["run", "--stages", "compare", "--run", str(store.root), "--set", "compare.n_boot=50"])
    assert res.exit_code == 0, res.output
    lines = res.output.strip().splitlines()
    assert lines[-2] == (
        "REFINE-AF beats Self-Instruct on 4 of 6 SuperNI tasks (67%), loses 1, 1 tie, sign test p = 0.38; "
        "mean ROUGE-L 30.8 vs 27.4 (base 12.5)"
    )
    assert lines[-1] == f"report: {store.root}/compare/report.md"
    # a run that leaves compare out prints no (possibly stale) headline
    res = runner.invoke(app, ["run", "--stages", "evaluate-base", "--run", str(store.root),
                              "--set", "evaluate.include_base=false"])
    assert res.exit_code == 0, res.output
    assert "beats" not in res.output
