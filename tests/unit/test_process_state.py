"""No hidden process state: the local runner runs every stage in one process, so no module may change what the next
stage sees (global seeds, umask, matplotlib's backend, datasets' progress bars, warning filters). Only the CLI entry
point sets process-wide things, and `seeds.global_rng` scopes the global seeding some libraries force."""

from __future__ import annotations

import ast
import random
from pathlib import Path

import numpy as np
import torch

from refine_af import seeds

PACKAGE = Path(seeds.__file__).parent
ALLOWED = {"cli.py", "seeds.py"}  # the entry point; the scoped seeding helper
FORBIDDEN = {"torch.manual_seed", "torch.cuda.manual_seed", "torch.cuda.manual_seed_all", "torch.seed",
             "np.random.seed", "numpy.random.seed", "random.seed", "set_seed", "transformers.set_seed",
             "matplotlib.use", "os.umask", "datasets.disable_progress_bars", "datasets.enable_progress_bars",
             "disable_progress_bars", "enable_progress_bars", "warnings.filterwarnings", "warnings.simplefilter"}


def _name(node: ast.expr) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_name(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else ""


def _calls_outside_catch_warnings(tree: ast.AST) -> list[tuple[int, str]]:
    scoped = set()  # calls inside `with warnings.catch_warnings()`: restored when the block ends
    for node in ast.walk(tree):
        if isinstance(node, ast.With) and any(_name(getattr(i.context_expr, "func", i.context_expr)) ==
                                              "warnings.catch_warnings" for i in node.items):
            scoped.update(id(n) for n in ast.walk(node))
    return [(n.lineno, _name(n.func)) for n in ast.walk(tree)
            if isinstance(n, ast.Call) and _name(n.func) in FORBIDDEN and id(n) not in scoped]


def test_no_module_but_the_cli_changes_process_state():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.relative_to(PACKAGE).as_posix() in ALLOWED:
            continue
        found += [f"{path.relative_to(PACKAGE)}:{line} {name}"
                  for line, name in _calls_outside_catch_warnings(ast.parse(path.read_text()))]
    assert not found, found


def test_global_rng_seeds_the_block_and_restores_the_state_after_it():
    torch.manual_seed(1)
    random.seed(1)
    np.random.seed(1)
    before = torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy()
    with seeds.global_rng(7):
        inside = torch.rand(3), random.random(), np.random.rand()
    assert torch.equal(torch.get_rng_state(), before[0]) and random.getstate() == before[1]
    assert (np.random.get_state()[1] == before[2]).all()
    torch.manual_seed(7)
    random.seed(7)
    np.random.seed(7)
    assert torch.equal(inside[0], torch.rand(3)) and inside[1:] == (random.random(), np.random.rand())
