"""One way to derive a random seed: from the run seed and the names of what is being drawn.

Every random draw in a run (a round's prompt sample, an instance's sampling stream, a PPO minibatch order) takes its
seed from `derive(run_seed, what, ...)`, so a draw depends only on what it is for, never on batch size, shard count or
the order work happens in; two different purposes never share a stream by accident.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
from collections.abc import Iterator


def derive(*parts: object) -> int:
    """A 63-bit seed from the parts' text (ints, strings): stable across processes, platforms and Python versions."""
    text = "\x1f".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1


@contextlib.contextmanager
def global_rng(seed: int) -> Iterator[None]:
    """torch's, numpy's and Python's global RNGs seeded with `seed` for the block, and put back as they were after it.

    Only for libraries that draw from the global RNGs and take no generator: peft's LoRA init and transformers'
    Trainer (which reseeds them itself, and restores them from a checkpoint on resume). Inside the block their draws
    depend on `seed` alone; after it the next stage of the same process sees the state from before. Our own sampling
    uses `torch.Generator`s seeded by `derive` instead."""
    import numpy as np
    import torch

    python, numpy = random.getstate(), np.random.get_state()
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=cuda):
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)  # all devices; fork_rng restores them
        try:
            yield
        finally:
            random.setstate(python)
            np.random.set_state(numpy)
