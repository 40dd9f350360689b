"""One way to derive a random seed: from the run seed and the names of what is being drawn.

Every random draw in a run (a round's prompt sample, an instance's sampling stream, a PPO minibatch order) takes its
seed from `derive(run_seed, what, ...)`, so a draw depends only on what it is for, never on batch size, shard count or
the order work happens in; two different purposes never share a stream by accident.
"""

from __future__ import annotations

import hashlib


def derive(*parts: object) -> int:
    """A 63-bit seed from the parts' text (ints, strings): stable across processes, platforms and Python versions."""
    text = "\x1f".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1
