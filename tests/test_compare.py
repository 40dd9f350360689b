"""Two-arm comparison math on hand-made scores: winners, ties, shares, bootstrap intervals, categories, rendering."""

import json

import numpy as np
import pytest

from refine_af.compare import bootstrap_ci, compare, plot, render_markdown, winner

A, B = "refine-af", "self-instruct"
SCORES = {
    A: {"t1": 50.0, "t2": 40.0, "t3": 30.0, "t4": 10.0, "t5": 20.0, "only_a": 99.0},
    B: {"t1": 40.0, "t2": 40.0, "t3": 35.0, "t4": 9.5, "t5": 10.0, "only_b": 1.0},
    "base": {"t1": 5.0, "t2": 15.0, "t3": 25.0},
}
CATS = {"t1": "gen", "t2": "gen", "t3": "cls", "t4": "cls"}


def test_winner_and_tolerance():
    assert winner(2, 1, A, B) == A
    assert winner(1, 2, A, B) == B
    assert winner(1, 1, A, B) == "tie"
    assert winner(1.4, 1, A, B, tolerance=0.5) == "tie"
    assert winner(1.6, 1, A, B, tolerance=0.5) == A


def test_compare_wins_ties_share():
    r = compare(SCORES, A, B)
    assert r["n_tasks"] == 5
    assert r["unmatched"] == {A: ["only_a"], B: ["only_b"]}
    by_task = {row["task"]: row for row in r["per_task"]}
    assert [by_task[t]["winner"] for t in ("t1", "t2", "t3", "t4", "t5")] == [A, "tie", B, A, A]
    assert by_task["t3"]["diff"] == -5.0
    assert r["wins"] == {A: 3, B: 1, "tie": 1}
    assert r["share"] == {A: 0.6, B: 0.2, "tie": 0.2}
    assert r["share_of_decided"][A] == 0.75
    # a tolerance of 1 turns t4 (10 vs 9.5) into a tie
    r1 = compare(SCORES, A, B, tie_tolerance=1.0)
    assert r1["wins"] == {A: 2, B: 1, "tie": 2}


def test_bootstrap_contains_mean_and_is_seeded():
    r = compare(SCORES, A, B, seed=7)
    for arm, expected in ((A, 30.0), (B, 26.9)):
        m = r["means"][arm]
        assert m["mean"] == pytest.approx(expected)
        assert m["ci"][0] <= m["mean"] <= m["ci"][1]
    d = r["mean_diff"]
    assert d["mean"] == pytest.approx(3.1) and d["ci"][0] <= d["mean"] <= d["ci"][1]
    assert compare(SCORES, A, B, seed=7) == r
    assert r["bootstrap"] == {
        "n": 1000,
        "confidence": 0.95,
        "seed": 7,
        "unit": "task",
        "method": "percentile",
    }


def test_bootstrap_ci_properties():
    mean, (lo, hi) = bootstrap_ci([3.0, 3.0, 3.0])
    assert mean == lo == hi == 3.0
    x = np.random.default_rng(0).normal(50, 10, size=200)
    mean, (lo, hi) = bootstrap_ci(x, n_boot=2000, seed=1)
    se = x.std(ddof=1) / np.sqrt(x.size)
    assert lo < mean < hi
    assert (hi - lo) == pytest.approx(2 * 1.96 * se, rel=0.15)  # close to the normal-theory width
    assert bootstrap_ci(x, seed=1) == bootstrap_ci(x, seed=1)
    assert bootstrap_ci(x, seed=2)[1] != [lo, hi]
    with pytest.raises(ValueError):
        bootstrap_ci([])


def test_per_category_and_base():
    r = compare(SCORES, A, B, base="base", categories=CATS)
    cats = {c["category"]: c for c in r["per_category"]}
    assert set(cats) == {"cls", "gen", "Uncategorized"}  # t5 has no category
    assert cats["gen"]["n_tasks"] == 2
    assert cats["gen"]["wins"] == {A: 1, B: 0, "tie": 1}
    assert cats["gen"]["means"] == {A: 45.0, B: 40.0, "base": 10.0}
    assert cats["cls"]["wins"] == {A: 1, B: 1, "tie": 0} and cats["cls"]["share"] == 0.5
    assert cats["Uncategorized"]["means"]["base"] is None
    assert r["means"]["base"]["n"] == 3 and r["means"]["base"]["mean"] == pytest.approx(15.0)
    assert r["wins"] == {A: 3, B: 1, "tie": 1}  # the reference arm never counts


def test_errors():
    with pytest.raises(ValueError, match="no scores for arm 'nope'"):
        compare(SCORES, A, "nope")
    with pytest.raises(ValueError, match="finite"):
        compare({A: {"t": float("nan")}, B: {"t": 1.0}}, A, B)
    with pytest.raises(ValueError, match="no scored task in common"):
        compare({A: {"x": 1.0}, B: {"y": 1.0}}, A, B)


def test_report_is_json_and_renders(tmp_path):
    r = compare(SCORES, A, B, base="base", categories=CATS)
    assert json.loads(json.dumps(r)) == r
    md = render_markdown(r)
    assert "**refine-af wins on 3 of 5 tasks (60.0%" in md
    assert "| base (reference) | 15.00 |" in md
    assert "only_a" in md  # unmatched tasks are listed
    assert md.index("| t5 |") < md.index("| t3 |")  # per task: largest advantage first
    png = plot(r, tmp_path / "compare.png")
    assert png.startswith(b"\x89PNG") and (tmp_path / "compare.png").read_bytes() == png
