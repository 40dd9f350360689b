"""Two-arm comparison: which arm wins per task, how often, and how sure we can be.

The paper's headline (REFINE-AF ahead of Self-Instruct on 63-66% of SuperNI tasks) is a per-task win count. Given
per-task scores (ROUGE-L, 0..100, from `refine_af.evalsets.superni.score_tasks`) for two arms, `compare_arms` builds a
`report.json`-ready dict with:

* per task: both scores, the difference A - B, and the winner; |A - B| <= `tie_tolerance` is a tie. Every score is
  first rounded as SuperNI's `compute_metrics` reports it (`round(score, 4)` on the 0..100 scale), so float noise
  (20.000000000000004 vs 20.0) never decides a task;
* wins and shares: share = wins / tasks, for each arm and for ties (the three add up to 1), plus A's share of the
  decided tasks (wins_A / (wins_A + wins_B)) since papers quote both;
* the exact two-sided sign test over the decided tasks (binomial, p = 1/2: `refine_af.stats.sign_test`), and the
  same counts and test at tie tolerances of 0 and 1 score point (`by_tolerance`), since "decided" depends on the
  tolerance;
* per-arm means over tasks with percentile bootstrap confidence intervals, and the same for the mean difference
  and A's win share. Resampling is over tasks (the unit the headline counts), *paired*: every resample draws the
  same tasks for all arms, so the difference's interval reflects the arms' correlation. numpy, seeded;
* a per-category table (task category, e.g. SuperNI's `Categories[0]`) and an optional reference arm (the
  untuned base model) shown next to both, which wins and shares ignore.

Tasks scored by only one of the arms are listed under "unmatched" and left out of every number.
`render_markdown` and `plot` (matplotlib, object API: no pyplot state, no GUI backend) present the same dict, and
`headline` says it in one line. A report may carry an optional "user_oriented" entry ({arm: {"rougeL",
"exact_match", "n"} or None}, added by the compare stage), which `render_markdown` shows as a secondary section, and
an optional "decontamination" entry ({arm: {"enabled", "threshold", "checked", "dropped", "by_task"}}), shown last.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from refine_af.schemas import TASK_SCORES
from refine_af.stats import bootstrap_ci, percentile_ci, resample, sign_test

__all__ = ["compare_arms", "headline", "official", "plot", "render_markdown", "winner"]

TIE = "tie"
DIGITS = 4  # SuperNI's compute_metrics: `round(v, 4)` of every (per-task) score, 0..100
TOLERANCES = (0.0, 1.0)  # tie tolerances reported side by side (score points)
UNCATEGORIZED = "Uncategorized"
DISPLAY = {"refine-af": "REFINE-AF", "self-instruct": "Self-Instruct", "rougeL": "ROUGE-L",
           "exact_match": "exact match"}  # names as the paper writes them; anything else is shown as is


def official(score: float) -> float:
    """A score as SuperNI reports it: rounded to 4 decimals (of 0..100)."""
    return round(score, DIGITS)


def _diff(a: float, b: float) -> float:
    # a - b of two 4-decimal scores is a 4-decimal number up to float error: 21.0001 - 20.0001 is 0.99999...96,
    # which a tolerance of 1 would otherwise count as decided
    return round(a - b, DIGITS)


def winner(a: float, b: float, arm_a: str, arm_b: str, tolerance: float = 0.0) -> str:
    """`arm_a` if a beats b by more than `tolerance`, `arm_b` if the reverse, else "tie" (on SuperNI's rounding)."""
    d = _diff(official(a), official(b))
    if abs(d) <= tolerance:
        return TIE
    return arm_a if d > 0 else arm_b


def _check_scores(scores: Mapping[str, Mapping[str, float]], arm: str) -> dict[str, float]:
    """One arm's {task: score} (`schemas.TASK_SCORES`: finite numbers) as SuperNI reports them."""
    if arm not in scores:
        raise ValueError(f"no scores for arm '{arm}' (have: {', '.join(sorted(scores)) or 'none'})")
    try:
        checked = TASK_SCORES.validate_python(scores[arm])
    except ValidationError as e:
        err = e.errors()[0]
        if not err["loc"]:
            raise ValueError(f"arm '{arm}': scores must map task to score, got {err['input']!r}") from None
        raise ValueError(f"arm '{arm}', task '{err['loc'][0]}': score must be a finite number, "
                         f"got {err['input']!r}") from None
    return {task: official(value) for task, value in checked.items()}


def compare_arms(
    scores: Mapping[str, Mapping[str, float]],
    arm_a: str = "refine-af",
    arm_b: str = "self-instruct",
    *,
    base: str | None = None,
    categories: Mapping[str, str] | None = None,
    tie_tolerance: float = 0.0,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    metric: str = "rougeL",
) -> dict[str, Any]:
    """Compare `scores[arm_a]` with `scores[arm_b]` (arm -> {task: score}) over the tasks both scored.

    `base` names a reference arm in `scores` (e.g. the untuned model), reported but never counted in wins;
    `categories` maps task -> category (missing: "Uncategorized"). The result holds only JSON types.
    """
    if arm_a == arm_b or TIE in (arm_a, arm_b, base):
        raise ValueError(f"compare needs two different arms, neither named '{TIE}'")
    if tie_tolerance < 0 or not 0 < confidence < 1 or n_boot < 1:
        raise ValueError("need tie_tolerance >= 0, 0 < confidence < 1 and n_boot >= 1")
    a, b = _check_scores(scores, arm_a), _check_scores(scores, arm_b)
    ref = _check_scores(scores, base) if base is not None else {}
    tasks = sorted(a.keys() & b.keys())
    if not tasks:
        raise ValueError(f"arms '{arm_a}' and '{arm_b}' have no scored task in common")
    arms = (arm_a, arm_b)

    # 1. per task: scores, difference, winner; 2. wins and sign tests over them; 3. means with a paired bootstrap
    # over tasks (the same resampled tasks for every statistic); 4. per category
    per_task = _per_task(tasks, a, b, ref, arms, base, categories or {}, tie_tolerance)
    idx = resample(len(tasks), n_boot, seed)
    return {
        "metric": metric,
        "arms": list(arms),
        "base": base,
        "n_tasks": len(tasks),
        "tie_tolerance": tie_tolerance,
        "score_digits": DIGITS,  # per-task scores were rounded to this many decimals before anything else
        "bootstrap": {"n": n_boot, "confidence": confidence, "seed": seed, "unit": "task", "method": "percentile"},
        **_wins(per_task, arms, idx, confidence),
        **_means(per_task, arms, base, idx, n_boot, confidence, seed),
        "per_category": _per_category(per_task, arms, base),
        "per_task": per_task,
        "unmatched": {arm_a: sorted(a.keys() - b.keys()), arm_b: sorted(b.keys() - a.keys())},
    }


def _per_task(tasks: list[str], a: dict[str, float], b: dict[str, float], ref: dict[str, float],
              arms: tuple[str, str], base: str | None, categories: Mapping[str, str], tolerance: float
              ) -> list[dict[str, Any]]:
    """A row per task: its category, the scores (the reference's, None where it has none), A - B and the winner."""
    arm_a, arm_b = arms
    rows = []
    for t in tasks:
        row = {"task": t, "category": categories.get(t, UNCATEGORIZED), "scores": {arm_a: a[t], arm_b: b[t]},
               "diff": _diff(a[t], b[t]), "winner": winner(a[t], b[t], arm_a, arm_b, tolerance)}
        if base is not None:
            row["scores"][base] = ref.get(t)
        rows.append(row)
    return rows


def _tally(winners: list[str], arms: tuple[str, str]) -> dict[str, int]:
    return {k: winners.count(k) for k in (*arms, TIE)}


def _wins(per_task: list[dict[str, Any]], arms: tuple[str, str], idx: np.ndarray, confidence: float
          ) -> dict[str, Any]:
    """Wins and shares (A's with its interval), the sign test, and the same counts at each of TOLERANCES."""
    arm_a, arm_b = arms
    won = [r["winner"] for r in per_task]
    wins = _tally(won, arms)
    decided = wins[arm_a] + wins[arm_b]
    by_tolerance = []
    for tol in TOLERANCES:
        counts = _tally([winner(r["scores"][arm_a], r["scores"][arm_b], arm_a, arm_b, tol) for r in per_task], arms)
        by_tolerance.append({"tie_tolerance": tol, "wins": counts, "decided": counts[arm_a] + counts[arm_b],
                             "sign_test_p": sign_test(counts[arm_a], counts[arm_b])})
    return {
        "wins": wins,
        "share": {k: v / len(won) for k, v in wins.items()},
        "share_ci": {arm_a: percentile_ci([w == arm_a for w in won], idx, confidence)},
        "share_of_decided": {arm: wins[arm] / decided if decided else None for arm in arms},
        "sign_test": {"decided": decided, "wins": wins[arm_a], "losses": wins[arm_b],
                      "p": sign_test(wins[arm_a], wins[arm_b]), "alternative": "two-sided", "method": "exact"},
        "by_tolerance": by_tolerance,
    }


def _means(per_task: list[dict[str, Any]], arms: tuple[str, str], base: str | None, idx: np.ndarray, n_boot: int,
           confidence: float, seed: int) -> dict[str, Any]:
    """Per-arm means over tasks and A - B's, with paired intervals; the reference's over the tasks it scored."""
    values = {arm: np.array([r["scores"][arm] for r in per_task]) for arm in arms}
    means = {arm: {"mean": float(v.mean()), "ci": percentile_ci(v, idx, confidence), "n": len(per_task)}
             for arm, v in values.items()}
    if base is not None:
        have = [r["scores"][base] for r in per_task if r["scores"][base] is not None]
        if have:  # a draw of its own: it may lack some of the tasks, so it cannot share the arms' resamples
            mean, ci = bootstrap_ci(have, n_boot, confidence, seed)
            means[base] = {"mean": mean, "ci": ci, "n": len(have)}
        else:
            means[base] = {"mean": None, "ci": None, "n": 0}
    diff = values[arms[0]] - values[arms[1]]
    return {"means": means, "mean_diff": {"mean": float(diff.mean()), "ci": percentile_ci(diff, idx, confidence)}}


def _per_category(per_task: list[dict[str, Any]], arms: tuple[str, str], base: str | None) -> list[dict[str, Any]]:
    """Per category, sorted: its tasks, the means (the reference's over the tasks it scored), wins and A's share."""
    out = []
    for c in sorted({r["category"] for r in per_task}):
        rows = [r for r in per_task if r["category"] == c]
        entry = {"category": c, "n_tasks": len(rows),
                 "means": {arm: float(np.mean([r["scores"][arm] for r in rows])) for arm in arms},
                 "wins": _tally([r["winner"] for r in rows], arms)}
        if base is not None:
            vals = [r["scores"][base] for r in rows if r["scores"][base] is not None]
            entry["means"][base] = float(np.mean(vals)) if vals else None
        entry["share"] = entry["wins"][arms[0]] / len(rows)
        out.append(entry)
    return out


# -- presentation -----------------------------------------------------------------------------------------------------


def _num(x: float | None, digits: int = 2) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _ci(ci: list[float] | None) -> str:
    return "–" if ci is None else f"[{ci[0]:.2f}, {ci[1]:.2f}]"


def _p(p: float) -> str:
    return f"{p:.2g}"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|")


def render_markdown(report: Mapping[str, Any]) -> str:
    """The report as Markdown: headline, means with intervals, per-category and per-task tables."""
    sections = (_summary_section, _tolerance_section, _means_section, _category_section, _task_section,
                _unmatched_section, _user_oriented_section, _decontamination_section)
    return "\n".join(line for section in sections for line in section(report)) + "\n"


def _arms(report: Mapping[str, Any]) -> list[str]:
    """The table columns: both arms, then the reference arm when there is one."""
    return [*report["arms"]] + ([report["base"]] if report["base"] else [])


def _label(arm: str, base: str | None) -> str:
    return f"{arm} (reference)" if arm == base else arm


def _pct(report: Mapping[str, Any]) -> str:
    return f"{100 * report['bootstrap']['confidence']:.0f}%"


def _summary_section(report: Mapping[str, Any]) -> list[str]:
    """Title, what was compared, the win count with its interval, A's share of the decided tasks, the sign test."""
    arm_a, arm_b = report["arms"]
    n, wins, share, share_ci = report["n_tasks"], report["wins"], report["share"], report["share_ci"][arm_a]
    lines = [
        f"# {arm_a} vs {arm_b}",
        "",
        f"Metric: {report['metric']} per task (rounded to {report.get('score_digits', DIGITS)} decimals as SuperNI "
        f"reports it), {n} tasks; a tie is |difference| <= {report['tie_tolerance']:g}.",
        "",
        (
            f"**{arm_a} wins on {wins[arm_a]} of {n} tasks ({100 * share[arm_a]:.1f}%, {_pct(report)} CI "
            f"{100 * share_ci[0]:.1f}-{100 * share_ci[1]:.1f}%)**; "
            f"{arm_b} wins on {wins[arm_b]} ({100 * share[arm_b]:.1f}%), ties: {wins[TIE]} ({100 * share[TIE]:.1f}%)."
        ),
    ]
    decided = report["share_of_decided"][arm_a]
    if decided is not None:
        lines.append(f"Of the decided tasks, {arm_a} wins {100 * decided:.1f}%.")
    sign = report.get("sign_test")
    if sign:
        lines.append(f"Sign test (exact, two-sided, over the {sign['decided']} decided tasks): p = {_p(sign['p'])}.")
    return lines


def _tolerance_section(report: Mapping[str, Any]) -> list[str]:
    """The win counts and sign test at each tie tolerance, when the report has them."""
    if not report.get("by_tolerance"):
        return []
    arm_a, arm_b = report["arms"]
    lines = ["", f"| tie tolerance | decided | {_cell(arm_a)} wins | {_cell(arm_b)} wins | ties | sign test p |",
             "|---:|---:|---:|---:|---:|---:|"]
    for row in report["by_tolerance"]:
        w = row["wins"]
        lines.append(f"| {row['tie_tolerance']:g} | {row['decided']} | {w[arm_a]} | {w[arm_b]} | {w[TIE]} | "
                     f"{_p(row['sign_test_p'])} |")
    return lines


def _means_section(report: Mapping[str, Any]) -> list[str]:
    """Each arm's mean over tasks with its interval, and A - B's."""
    arm_a, arm_b = report["arms"]
    boot = report["bootstrap"]
    lines = [
        "",
        f"## Mean over tasks ({_pct(report)} paired bootstrap CI, {boot['n']} resamples of tasks, seed {boot['seed']})",
        "",
        "| arm | mean | CI | tasks |",
        "|---|---:|---|---:|",
    ]
    for arm in _arms(report):
        m = report["means"][arm]
        lines.append(f"| {_cell(_label(arm, report['base']))} | {_num(m['mean'])} | {_ci(m['ci'])} | {m['n']} |")
    d = report["mean_diff"]
    return lines + [f"| {_cell(arm_a)} − {_cell(arm_b)} | {_num(d['mean'])} | {_ci(d['ci'])} | {report['n_tasks']} |",
                    ""]


def _category_section(report: Mapping[str, Any]) -> list[str]:
    arm_a, arm_b = report["arms"]
    arms = _arms(report)
    lines = [
        "## Per category",
        "",
        "| category | tasks | " + " | ".join(_cell(a) for a in arms) + f" | {_cell(arm_a)} wins | "
        f"{_cell(arm_b)} wins | ties | {_cell(arm_a)} share |",
        "|---|---:|" + "---:|" * len(arms) + "---:|---:|---:|---:|",
    ]
    for c in report["per_category"]:
        means = " | ".join(_num(c["means"][a]) for a in arms)
        w = c["wins"]
        lines.append(
            f"| {_cell(c['category'])} | {c['n_tasks']} | {means} | {w[arm_a]} | {w[arm_b]} | "
            f"{w[TIE]} | {100 * c['share']:.0f}% |"
        )
    return lines + [""]


def _task_section(report: Mapping[str, Any]) -> list[str]:
    arms = _arms(report)
    lines = [
        "## Per task (largest advantage for " + report["arms"][0] + " first)",
        "",
        "| task | category | " + " | ".join(_cell(a) for a in arms) + " | difference | winner |",
        "|---|---|" + "---:|" * len(arms) + "---:|---|",
    ]
    for r in sorted(report["per_task"], key=lambda r: (-r["diff"], r["task"])):
        scores = " | ".join(_num(r["scores"][a]) for a in arms)
        lines.append(
            f"| {_cell(r['task'])} | {_cell(r['category'])} | {scores} | {r['diff']:+.2f} | "
            f"{_cell(r['winner'])} |"
        )
    return lines


def _unmatched_section(report: Mapping[str, Any]) -> list[str]:
    unmatched = {k: v for k, v in report["unmatched"].items() if v}
    if not unmatched:
        return []
    return ["", "Left out (scored by one arm only): " + "; ".join(f"{k}: {', '.join(v)}" for k, v in unmatched.items())]


def _user_oriented_section(report: Mapping[str, Any]) -> list[str]:
    """The secondary user-oriented means the compare stage adds, when any arm has them."""
    user, arms = report.get("user_oriented") or {}, _arms(report)
    if not any(user.get(a) for a in arms):
        return []
    lines = [
        "",
        "## User-oriented instructions (secondary: mean over instances, not part of the win count)",
        "",
        "| arm | rougeL | exact_match | instances |",
        "|---|---:|---:|---:|",
    ]
    for arm in arms:
        u, label = user.get(arm), _cell(_label(arm, report["base"]))
        lines.append(f"| {label} | {_num(u['rougeL'])} | {_num(u['exact_match'])} | {u['n']} |" if u
                     else f"| {label} | – | – | 0 |")
    return lines


def _decontamination_section(report: Mapping[str, Any]) -> list[str]:
    """Per training arm: rows its instances stage dropped for reproducing an evaluation text, by evaluation task."""
    deco = report.get("decontamination") or {}
    if not deco:
        return []
    lines = ["", "## Decontamination (training instances dropped for matching an evaluation text)", "",
             "| arm | checked | dropped | ROUGE-L F above | by evaluation task |", "|---|---:|---:|---:|---|"]
    for arm, d in deco.items():
        if not d or not d["enabled"]:
            lines.append(f"| {_cell(arm)} | – | – | – | off: not checked |")
            continue
        tasks = ", ".join(f"{k} ({v})" for k, v in (d.get("by_task") or {}).items()) or "none"
        lines.append(f"| {_cell(arm)} | {d['checked']} | {d['dropped']} | {d['threshold']:g} | {_cell(tasks)} |")
    return lines


def headline(report: Mapping[str, Any], tasks: str = "SuperNI tasks") -> str:
    """One line for a terminal, e.g. "REFINE-AF beats Self-Instruct on 7 of 12 SuperNI tasks (58%), loses 4, 1 tie,
    sign test p = 0.55; mean ROUGE-L 23.1 vs 21.4 (base 19.0)". The base model's mean is left out when the report has
    none."""
    arm_a, arm_b = report["arms"]
    wins, n, means, base = report["wins"], report["n_tasks"], report["means"], report["base"]
    ties = wins[TIE]
    line = (
        f"{DISPLAY.get(arm_a, arm_a)} beats {DISPLAY.get(arm_b, arm_b)} on {wins[arm_a]} of {n} {tasks} "
        f"({100 * report['share'][arm_a]:.0f}%), loses {wins[arm_b]}, {ties} tie{'' if ties == 1 else 's'}"
    )
    if "sign_test" in report:
        line += f", sign test p = {_p(report['sign_test']['p'])}"
    line += (
        f"; mean {DISPLAY.get(report['metric'], report['metric'])} {means[arm_a]['mean']:.1f} "
        f"vs {means[arm_b]['mean']:.1f}"
    )
    if base and means.get(base, {}).get("mean") is not None:
        line += f" ({DISPLAY.get(base, base)} {means[base]['mean']:.1f})"
    return line


def plot(report: Mapping[str, Any], path: str | Path | None = None) -> bytes:
    """PNG: sorted per-task differences (left) and per-arm means with CIs (right); written to `path` if given."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    arm_a, arm_b = report["arms"]
    base = report["base"]
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    FigureCanvasAgg(fig)  # render with Agg whatever the process-wide backend is
    left, right = fig.subplots(1, 2, width_ratios=[2.2, 1])

    diffs = sorted(r["diff"] for r in report["per_task"])
    tol = report["tie_tolerance"]
    colors = ["#2a9d8f" if d > tol else "#e76f51" if d < -tol else "#9e9e9e" for d in diffs]
    left.bar(range(len(diffs)), diffs, color=colors, width=1.0)
    left.axhline(0, color="black", linewidth=0.8)
    left.set_xlabel("tasks, sorted by difference")
    left.set_ylabel(f"{report['metric']}: {arm_a} − {arm_b}")
    w = report["wins"]
    left.set_title(
        f"{arm_a} wins {w[arm_a]}, {arm_b} wins {w[arm_b]}, ties {w[TIE]} (of {report['n_tasks']})"
    )

    arms = [a for a in (arm_a, arm_b, base) if a and report["means"][a]["mean"] is not None]
    means = [report["means"][a]["mean"] for a in arms]
    errs = np.array(
        [[m - report["means"][a]["ci"][0], report["means"][a]["ci"][1] - m] for a, m in zip(arms, means)]
    ).T
    right.bar(arms, means, yerr=errs, capsize=6, color=["#2a9d8f", "#e76f51", "#9e9e9e"][: len(arms)])
    right.set_ylabel(f"mean {report['metric']} over tasks")
    right.set_title(f"means, {100 * report['bootstrap']['confidence']:.0f}% bootstrap CI")

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    data = buf.getvalue()
    if path is not None:
        Path(path).write_bytes(data)
    return data
