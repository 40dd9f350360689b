"""Two-arm comparison on hand-made scores: winners, ties, shares, bootstrap intervals, categories, rendering."""

import json

import pytest

from refine_af.compare import compare_arms, headline, plot, render_markdown, winner

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


def test_scores_are_compared_after_superni_rounding():
    """SuperNI's compute_metrics reports round(score, 4): float noise is a tie, a reported difference is not."""
    r = compare_arms({A: {"t": 20.000000000000004}, B: {"t": 20.0}}, A, B)
    assert r["wins"] == {A: 0, B: 0, "tie": 1} and r["per_task"][0]["diff"] == 0.0
    assert r["per_task"][0]["scores"] == {A: 20.0, B: 20.0} and r["score_digits"] == 4
    assert winner(20.000000000000004, 20.0, A, B) == "tie"
    assert compare_arms({A: {"t": 20.0001}, B: {"t": 20.0}}, A, B)["wins"][A] == 1
    assert compare_arms({A: {"t": 20.00001}, B: {"t": 20.0}}, A, B)["wins"]["tie"] == 1  # below SuperNI's precision
    # 2.0001 - 1.0001 is 1.0000000000000002 in floats: exactly one point, so a tie at tolerance 1
    assert winner(2.0001, 1.0001, A, B, tolerance=1.0) == "tie"
    assert winner(2.0002, 1.0001, A, B, tolerance=1.0) == A


def test_sign_test_and_tolerances_in_the_report():
    a = {f"t{i}": 30.0 for i in range(12)}
    b = {**{f"t{i}": 20.0 for i in range(9)}, "t9": 40.0, "t10": 29.5, "t11": 30.0}  # 9 wins, 1 loss, 1 tie by 0.5
    a["t10"] = 30.0
    r = compare_arms({A: a, B: b}, A, B)
    assert r["wins"] == {A: 10, B: 1, "tie": 1}
    assert r["sign_test"] == {"decided": 11, "wins": 10, "losses": 1, "p": pytest.approx(24 / 2048),
                              "alternative": "two-sided", "method": "exact"}
    assert [(t["tie_tolerance"], t["decided"], t["wins"]) for t in r["by_tolerance"]] == [
        (0.0, 11, {A: 10, B: 1, "tie": 1}), (1.0, 10, {A: 9, B: 1, "tie": 2})]
    assert r["by_tolerance"][1]["sign_test_p"] == pytest.approx(22 / 1024)
    r1 = compare_arms({A: a, B: b}, A, B, tie_tolerance=1.0)
    assert r1["sign_test"]["p"] == pytest.approx(22 / 1024) and r1["by_tolerance"] == r["by_tolerance"]
    md = render_markdown(r1)
    assert "Sign test (exact, two-sided, over the 10 decided tasks): p = 0.021." in md
    assert "| 0 | 11 | 10 | 1 | 1 | 0.012 |" in md and "| 1 | 10 | 9 | 1 | 2 | 0.021 |" in md
    assert headline(r1) == ("REFINE-AF beats Self-Instruct on 9 of 12 SuperNI tasks (75%), loses 1, 2 ties, "
                            "sign test p = 0.021; mean ROUGE-L 30.0 vs 23.3")


def test_compare_wins_ties_share():
    r = compare_arms(SCORES, A, B)
    assert r["n_tasks"] == 5
    assert r["unmatched"] == {A: ["only_a"], B: ["only_b"]}
    by_task = {row["task"]: row for row in r["per_task"]}
    assert [by_task[t]["winner"] for t in ("t1", "t2", "t3", "t4", "t5")] == [A, "tie", B, A, A]
    assert by_task["t3"]["diff"] == -5.0
    assert r["wins"] == {A: 3, B: 1, "tie": 1}
    assert r["share"] == {A: 0.6, B: 0.2, "tie": 0.2}
    assert r["share_of_decided"][A] == 0.75
    # a tolerance of 1 turns t4 (10 vs 9.5) into a tie
    r1 = compare_arms(SCORES, A, B, tie_tolerance=1.0)
    assert r1["wins"] == {A: 2, B: 1, "tie": 2}


def test_bootstrap_contains_mean_and_is_seeded():
    r = compare_arms(SCORES, A, B, seed=7)
    for arm, expected in ((A, 30.0), (B, 26.9)):
        m = r["means"][arm]
        assert m["mean"] == pytest.approx(expected)
        assert m["ci"][0] <= m["mean"] <= m["ci"][1]
    d = r["mean_diff"]
    assert d["mean"] == pytest.approx(3.1) and d["ci"][0] <= d["mean"] <= d["ci"][1]
    assert compare_arms(SCORES, A, B, seed=7) == r
    assert r["bootstrap"] == {
        "n": 1000,
        "confidence": 0.95,
        "seed": 7,
        "unit": "task",
        "method": "percentile",
    }


def test_per_category_and_base():
    r = compare_arms(SCORES, A, B, base="base", categories=CATS)
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
        compare_arms(SCORES, A, "nope")
    with pytest.raises(ValueError, match="finite"):
        compare_arms({A: {"t": float("nan")}, B: {"t": 1.0}}, A, B)
    with pytest.raises(ValueError, match="no scored task in common"):
        compare_arms({A: {"x": 1.0}, B: {"y": 1.0}}, A, B)


def test_report_is_json_and_renders(tmp_path):
    r = compare_arms(SCORES, A, B, base="base", categories=CATS)
    assert json.loads(json.dumps(r)) == r
    md = render_markdown(r)
    assert "**refine-af wins on 3 of 5 tasks (60.0%" in md
    assert "| base (reference) | 15.00 |" in md
    assert "only_a" in md  # unmatched tasks are listed
    assert md.index("| t5 |") < md.index("| t3 |")  # per task: largest advantage first
    png = plot(r, tmp_path / "compare.png")
    assert png.startswith(b"\x89PNG") and (tmp_path / "compare.png").read_bytes() == png
