"""Exact ROUGE-L near-duplicate filter for instruction pools, pruned and bit-parallel.

Decision rule (Self-Instruct, ``bootstrap_instructions.py``): a generated instruction joins the pool
only if its ROUGE-L F-measure against every pooled instruction is at most 0.7, i.e. it is rejected iff
``max(RougeScorer(["rougeL"], use_stemmer=False).score(inst, pooled)["rougeL"].fmeasure) > 0.7``
(strict), one ``score`` call per pooled text. That is O(pool) pure-Python LCS tables per candidate.
This module makes the *same* decisions, bit for bit, hundreds of times faster. It is written by hand
because no library does pruned exact ROUGE-L: ``rouge_score`` and ``rouge-score-rs`` score every
pair, and set-similarity joins (MinHash, prefix filtering on Jaccard) approximate or use another measure.

Exactness. :func:`tokenize` reproduces rouge_score's default tokenizer (lowercase, keep runs of
``[a-z0-9]``, no stemming), and :func:`_fmeasure` repeats ``_score_lcs``/``scoring.fmeasure``
operation for operation: ``p = lcs/len(prediction)``, ``r = lcs/len(target)``,
``2 * p * r / (p + r)``, 0 when either side is empty, so scores exactly at the threshold fall the
same way. The F-measure depends only on (LCS, m, n) and is symmetric in float (``2*p`` is exact, and
``*`` and ``+`` commute), so ``score(inst, pooled)`` and ``score(pooled, inst)`` agree exactly.
Note that exact ties are not all equal: with m = n = 10 and LCS = 7 the score is 0.7 (kept), with
m = 9, n = 11 and LCS = 7 it is 0.7000000000000001 (rejected); ``2*lcs/(m+n)`` would get the latter wrong.

Pruning. For token lengths m (pooled) and n (candidate), F = 2·LCS/(m+n). A pair can reach a level
tau only if LCS >= need(m) = ceil(tau·(m+n)/2), taken a hair lower so that float rounding can never
prune a pair that rouge_score would score >= tau. Bounds used, cheapest first:

1. Length: LCS <= min(m, n), so need(m) <= min(m, n); k_min = the least need over admissible m.
2. Prefix filter: treat each token occurrence (token, j-th copy) as an element, so that multiset
   intersection = set intersection. A pooled text sharing >= k_min elements with the candidate must
   contain one of any n - k_min + 1 candidate elements; probing the *rarest* ones (by their inverted-
   index posting length; unseen tokens are free) yields a short candidate list.
3. Bag of words: LCS <= |multiset intersection|, counted exactly for those candidates by binary search
   in the sorted postings of the remaining (common) elements, pruning as it goes.
4. Exact LCS for survivors with the bit-parallel algorithm of Allison-Dix/Hyyrö
   (``V' = (V + U) | (V - U)``, ``U = V & match[token]``, LCS = zeros of V): numpy uint64 lanes,
   one pooled text per lane, when many survive and the candidate has <= 64 tokens; else Python ints.

``add`` computes LCS for the most promising survivors first and stops as soon as one exceeds the
threshold. ``nearest`` needs the maximum: it scans at the threshold, then at falling levels (0.5,
0.35, 0.2, 0); a level whose survivors top out at b below it is retried at level b, which then
returns the exact maximum (ties: earliest pooled text). ``add(text)`` right after ``nearest(text)``
reuses that maximum instead of scanning again.
"""

from __future__ import annotations

import re
from array import array
from collections.abc import Iterable

import numpy as np

__all__ = ["NearDuplicateFilter", "rouge_l_f", "tokenize"]

# rouge_score: lower(), replace [^a-z0-9]+ with " ", split, keep tokens matching ^[a-z0-9]+$.
# Lowercasing comes first, so non-ASCII that lowercases to ASCII counts (KELVIN SIGN -> "k",
# "İ" -> "i" + combining dot); everything else non-ASCII is a separator.
_TOKEN_RE = re.compile(r"[a-z0-9]+")
_OCC = 1 << 32  # element key = token id + j * _OCC for the j-th copy of a token in a text
_RELAX = 1.0 - 1e-9  # need() is computed this much low: float error of F is ~1e-15 relative
_LEVELS = (0.5, 0.35, 0.2, 0.0)  # nearest(): levels below the threshold, the last exhaustive
_FIRST_CHUNK = 32  # add(): exact LCS for the most promising survivors first
_FEW = 24  # up to this many survivors, per-pair Python-int LCS beats numpy's per-call overhead
_NEVER = 1 << 40
_BYTE_POP = np.array([i.bit_count() for i in range(256)], dtype=np.uint8)


def tokenize(text: str) -> list[str]:
    """Tokens exactly as rouge_score's DefaultTokenizer(use_stemmer=False) yields them."""
    return _TOKEN_RE.findall(text.lower())


def _fmeasure(lcs: int, n_target: int, n_prediction: int) -> float:
    """rouge_score's ``_score_lcs`` F-measure, same float operations in the same order."""
    if not n_target or not n_prediction:
        return 0.0
    precision = lcs / n_prediction
    recall = lcs / n_target
    if precision + recall > 0:
        return 2 * precision * recall / (precision + recall)
    return 0.0


def _match_masks(seq: Iterable) -> dict:
    masks: dict = {}
    for i, t in enumerate(seq):
        masks[t] = masks.get(t, 0) | (1 << i)
    return masks


def _lcs_bits(masks: dict, m: int, seq: Iterable) -> int:
    """LCS length of the m-long text behind ``masks`` and ``seq`` (bit-parallel, Python ints)."""
    v = full = (1 << m) - 1
    get = masks.get
    for t in seq:
        u = v & get(t, 0)
        if u:  # carries and borrows only move upwards, so bits >= m never disturb bits < m
            v = (v + u) | (v - u)
    return m - (v & full).bit_count()


def rouge_l_f(a: str, b: str) -> float:
    """``RougeScorer(["rougeL"]).score(a, b)["rougeL"].fmeasure``, exactly (a is the target)."""
    ta, tb = tokenize(a), tokenize(b)
    if not ta or not tb:
        return 0.0
    return _fmeasure(_lcs_bits(_match_masks(tb), len(tb), ta), len(ta), len(tb))


def _popcount(x: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(x)
    return _BYTE_POP[x.view(np.uint8).reshape(-1, 8)].sum(axis=1)


def _need(m, n: int, tau: float):
    """Least LCS with which an (m, n) pair could score >= tau (never above the true least)."""
    return np.maximum(np.ceil(tau * (m + n) * 0.5 * _RELAX), 1)


class _Grow:
    """A growable 1-D numpy array (amortised O(1) appends)."""

    def __init__(self, dtype) -> None:
        self.a = np.zeros(256, dtype=dtype)
        self.n = 0

    def extend(self, values) -> None:
        k = len(values)
        if self.n + k > len(self.a):
            self.a = np.concatenate([self.a, np.zeros(max(len(self.a), k), self.a.dtype)])
        self.a[self.n : self.n + k] = values
        self.n += k

    def view(self) -> np.ndarray:
        return self.a[: self.n]


class NearDuplicateFilter:
    """A pool of texts that rejects ROUGE-L near-duplicates exactly as Self-Instruct does.

    ``add(text)`` accepts (and pools) ``text`` iff ``rouge_l_f(pooled, text) <= threshold`` for every
    pooled text. Texts given as ``pool`` (seeds) join unconditionally.
    """

    def __init__(self, threshold: float = 0.7, pool: Iterable[str] = ()) -> None:
        self.threshold = float(threshold)
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be within [0, 1], got {threshold!r}")
        self._texts: list[str] = []
        self._vocab: dict[str, int] = {}  # token -> id >= 1; 0 is padding / unseen
        self._post: dict[int, array] = {}  # element key -> ascending ids of pooled texts holding it
        self._flat = _Grow(np.int32)  # token ids of all pooled texts, concatenated
        self._start = _Grow(np.int64)
        self._len = _Grow(np.int64)
        self._pm = np.zeros(1024, dtype=np.uint64)  # token id -> candidate match mask (scratch)
        self._longest = 0
        self._last: tuple = (None, -1, 0.0)  # (text, pool size, best F) of the last nearest()
        self._tables: dict[tuple[int, float], np.ndarray] = {}  # (n, tau) -> need by pooled length
        for text in pool:
            self._insert(text, tokenize(text))

    def __len__(self) -> int:
        return len(self._texts)

    def add(self, text: str) -> bool:
        """Pool ``text`` and return True unless some pooled text scores above the threshold."""
        tokens = tokenize(text)
        if self._is_dup(text, tokens):
            return False
        self._insert(text, tokens)
        return True

    def extend(self, texts: Iterable[str]) -> list[bool]:
        """``add`` each text in order; earlier acceptances count against later texts."""
        return [self.add(t) for t in texts]

    def is_duplicate(self, text: str) -> bool:
        """Whether ``add(text)`` would reject ``text``, without pooling it."""
        return self._is_dup(text, tokenize(text))

    def nearest(self, text: str) -> tuple[str | None, float]:
        """The pooled text with the highest ROUGE-L F against ``text`` (earliest on ties), and the F."""
        if not self._texts:
            return None, 0.0
        tokens = tokenize(text)
        # Falling levels; a level whose survivors top out at b < tau is retried at b, which is
        # then sure to return its best (the text scoring b passes every bound at level b).
        levels = [x for x in _LEVELS if x < self.threshold]
        tau = self.threshold
        while True:
            docs, scores = self._scan(tokens, tau)
            best = float(scores.max()) if len(docs) else 0.0
            if len(docs) and best >= tau:
                i = int(np.argmax(scores))  # docs ascend, so argmax picks the earliest of equals
                self._last = (text, len(self._texts), best)  # add(text) right after: no rescan
                return self._texts[docs[i]], best
            if best > 0:
                tau = best
            elif tau > 0:
                tau = next(x for x in levels if x < tau)
            else:
                return self._texts[0], 0.0  # nothing shares a token: all score 0

    # -- internals ---------------------------------------------------------------------------

    def _is_dup(self, text: str, tokens: list[str]) -> bool:
        if not self._texts:
            return False
        if self._last[:2] == (text, len(self._texts)):  # nearest(text) just found the maximum
            return self._last[2] > self.threshold
        docs, _ = self._scan(tokens, self.threshold, stop_above=self.threshold)
        return len(docs) > 0

    def _insert(self, text: str, tokens: list[str]) -> None:
        doc = len(self._texts)
        self._texts.append(text)
        vocab, post = self._vocab, self._post
        ids, seen = [], {}
        for tok in tokens:
            t = vocab.get(tok)
            if t is None:
                t = vocab[tok] = len(vocab) + 1
            ids.append(t)
            j = seen.get(t, 0)
            seen[t] = j + 1
            key = t + j * _OCC
            p = post.get(key)
            if p is None:
                post[key] = array("q", (doc,))
                continue
            try:
                p.append(doc)
            except BufferError:  # a numpy view still pins it (e.g. a traceback kept _scan's frame)
                post[key] = array("q", p)
                post[key].append(doc)
        if len(vocab) >= len(self._pm):
            self._pm = np.zeros(2 * len(vocab) + 1, dtype=np.uint64)
        self._start.extend((self._flat.n,))
        self._len.extend((len(ids),))
        self._longest = max(self._longest, len(ids))
        self._flat.extend(ids)

    def _need_table(self, n: int, tau: float) -> np.ndarray:
        """need() for every pooled length m, or _NEVER where even LCS = min(m, n) falls short."""
        table = self._tables.get((n, tau))
        if table is None or len(table) <= self._longest:
            ms = np.arange(2 * self._longest + 1)
            need = _need(ms, n, tau)
            table = np.where(need <= np.minimum(ms, n), need, _NEVER).astype(np.int64)
            self._tables[(n, tau)] = table
        return table

    def _scan(self, tokens: list[str], tau: float, stop_above: float | None = None):
        """Exact F for a superset of the pooled texts that score >= tau (doc ids ascending).

        With ``stop_above``, return only texts scoring above it, possibly stopping after the
        first chunk that has one.
        """
        empty = np.zeros(0, np.int64), np.zeros(0)
        n = len(tokens)
        if not n:
            return empty
        table = self._need_table(n, tau)
        kmin = int(table.min())  # need() grows with m, so this is at the shortest admissible m
        if kmin == _NEVER:
            return empty
        vocab, post = self._vocab, self._post
        ids = [vocab.get(tok, 0) for tok in tokens]
        lists, seen = [], {}
        for t in ids:
            if t:
                j = seen.get(t, 0)
                seen[t] = j + 1
                p = post.get(t + j * _OCC)
                if p is not None:
                    lists.append(p)
        # Prefix filter: a text with >= kmin shared elements holds one of any n-kmin+1 of ours.
        # Elements nobody holds are free members of that set.
        size = n - kmin + 1 - (n - len(lists))
        if size <= 0:
            return empty
        lists.sort(key=len)
        probe, rest = lists[:size], lists[size:]
        cat = np.frombuffer(probe[0], np.int64)
        if size > 1:
            cat = np.sort(np.concatenate([cat] + [np.frombuffer(p, np.int64) for p in probe[1:]]))
        # Distinct ids and how many probed elements each holds (np.unique without its overhead).
        first = np.flatnonzero(np.concatenate(([True], cat[1:] != cat[:-1])))
        docs, hits = cat[first], np.diff(np.append(first, len(cat)))
        # slack = how many of the remaining elements a text may lack and still reach need().
        slack = hits + len(rest) - table[self._len.a[docs]]
        keep = slack >= 0
        docs, slack = docs[keep], slack[keep]
        # Exact multiset overlap by binary search in the sorted postings, dropping hopeless texts.
        for p in rest:
            if not len(docs):
                return empty
            a = np.frombuffer(p, np.int64)
            slack = slack - (a.take(np.searchsorted(a, docs), mode="clip") != docs)
            keep = slack >= 0
            docs, slack = docs[keep], slack[keep]
        if not len(docs):
            return empty
        m = self._len.a[docs]
        if stop_above is not None and len(docs) > 2 * _FIRST_CHUNK:
            # Most promising (largest overlap beyond need) first: a near-duplicate is usually there.
            order = np.argsort(-slack, kind="stable")
            first = np.sort(order[:_FIRST_CHUNK])
            f = self._scores(ids, docs[first], m[first])
            if (f > stop_above).any():
                return docs[first][f > stop_above], f[f > stop_above]
            later = np.sort(order[_FIRST_CHUNK:])
            docs, m = docs[later], m[later]
        f = self._scores(ids, docs, m)
        if stop_above is not None:
            return docs[f > stop_above], f[f > stop_above]
        return docs, f

    def _scores(self, ids: list[int], docs: np.ndarray, m: np.ndarray) -> np.ndarray:
        """rouge_score F of the candidate (token ids ``ids``) against each pooled text in ``docs``."""
        n = len(ids)
        flat, start = self._flat.a, self._start.a[docs]
        masks = _match_masks(ids)
        masks.pop(0, None)  # unseen tokens match nothing
        if n > 64 or len(docs) <= _FEW:
            return np.array([
                _fmeasure(_lcs_bits(masks, n, flat[s : s + k].tolist()), k, n)
                for s, k in zip(start.tolist(), m.tolist())
            ])
        lcs = self._lcs_lanes(masks, n, start, m)
        # _fmeasure vectorised: same operations, same order (numpy float64 = Python float).
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = lcs / n
            recall = lcs / m
            f = 2 * precision * recall / (precision + recall)
        return np.where(precision + recall > 0, f, 0.0)

    def _lcs_lanes(self, masks: dict, n: int, start: np.ndarray, m: np.ndarray) -> np.ndarray:
        """Bit-parallel LCS with one uint64 lane per pooled text (candidate of <= 64 tokens)."""
        pm = self._pm
        keys = list(masks)
        pm[keys] = np.array(list(masks.values()), dtype=np.uint64)
        try:
            width = int(m.max())
            cols = np.arange(width)
            valid = cols < m[:, None]
            tok = np.where(valid, self._flat.a[np.minimum(start[:, None] + cols, self._flat.n - 1)], 0)
            match = pm[tok]
        finally:
            pm[keys] = 0
        # Tokens the candidate lacks leave V unchanged: squeeze them out, keeping order.
        nz = match != 0
        count = nz.sum(axis=1)
        k = int(count.max())
        if k < width:
            packed = np.zeros((k, len(m)), dtype=np.uint64)
            rows = np.nonzero(nz)[0]
            packed[(np.cumsum(nz, axis=1) - 1)[nz], rows] = match[nz]
        else:
            packed = np.ascontiguousarray(match.T)
        full = np.uint64((1 << n) - 1)
        v = np.full(len(m), full, dtype=np.uint64)
        u, w = np.empty_like(v), np.empty_like(v)
        for col in packed:  # uint64 wraps on overflow, as fixed-width Hyyro LCS requires
            np.bitwise_and(v, col, out=u)
            np.add(v, u, out=w)
            np.subtract(v, u, out=u)
            np.bitwise_or(w, u, out=v)
        return n - _popcount(v & full).astype(np.int64)
