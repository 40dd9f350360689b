"""refine_af.dedup makes exactly rouge_score's decisions (0 differences), on adversarial and random cases."""

import json
import random

import pytest
from helpers import SHARED
from rouge_score import rouge_scorer
from rouge_score import tokenize as rs_tokenize

from refine_af.dedup import NearDuplicateFilter, rouge_l_f, tokenize

SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
SEEDS = SHARED / "data" / "seed_tasks.jsonl"

ADVERSARIAL = [
    "", " ", "\t\n  ", "...", "?!-- ,;:", "a", "A", "a a a a", "the the the cat the",
    "Write a poem.", "write a POEM", "Write   a\tpoem\n", "poem a write",
    "Café naïve résumé", "cafe naive resume", "Straße", "İstanbul", "KELVIN \u212a", "ﬁne ﬁle",
    "日本語のテキスト", "中文 text 中文", "emoji 😀 test 😀", "😀😀😀", "x²+y²", "١٢٣ 123", "ÀÉÎÕÜ",
    "don't can't won't", "e-mail e mail", "C++ and C#", "3.14159 is pi", "a1b2 c3", "_under_score_",
    "\u00a0non\u00a0breaking\u2003spaces", "zero\u200bwidth", "line\nbreak\r\nend", "ALL CAPS TEXT",
]


def ref_f(target: str, prediction: str) -> float:
    return SCORER.score(target, prediction)["rougeL"].fmeasure


def brute_extend(pool: list[str], texts: list[str], threshold: float = 0.7) -> list[bool]:
    pool, out = list(pool), []
    for t in texts:
        ok = all(ref_f(p, t) <= threshold for p in pool)
        out.append(ok)
        if ok:
            pool.append(t)
    return out


def random_text(rng: random.Random, vocab: list[str], lo: int, hi: int) -> str:
    return " ".join(rng.choice(vocab) for _ in range(rng.randint(lo, hi)))


def test_tokenize_matches_rouge_score():
    for text in ADVERSARIAL:
        assert tokenize(text) == rs_tokenize.tokenize(text, None), text
    assert tokenize("İ") == ["i"]  # lowercases to "i" + combining dot: rouge_score keeps the "i"
    assert tokenize("\u212a") == ["k"]  # KELVIN SIGN lowercases to ASCII "k"
    assert tokenize("Café 😀 日本") == ["caf"]


def test_rouge_l_f_adversarial_pairs():
    for a in ADVERSARIAL:
        for b in ADVERSARIAL:
            assert rouge_l_f(a, b) == ref_f(a, b), (a, b)


def test_rouge_l_f_random_pairs_exact():
    rng = random.Random(1234)
    vocab = ["a", "b", "c", "d", "the", "of", "write", "list"]
    for _ in range(4000):
        a, b = random_text(rng, vocab, 0, 18), random_text(rng, vocab, 0, 18)
        assert rouge_l_f(a, b) == ref_f(a, b), (a, b)
        assert rouge_l_f(b, a) == ref_f(a, b)  # symmetric, float for float


def _pair(m: int, n: int, lcs: int) -> tuple[str, str]:
    """Texts of m and n tokens whose LCS is exactly ``lcs`` (shared tokens, then distinct fillers)."""
    common = [f"w{i}" for i in range(lcs)]
    return " ".join(common + [f"t{i}" for i in range(m - lcs)]), " ".join(common + [f"p{i}" for i in range(n - lcs)])


def test_exactly_at_threshold():
    cases = [(m, n, lcs) for m in range(1, 41) for n in range(1, 41) for lcs in range(1, min(m, n) + 1)
             if 20 * lcs == 7 * (m + n)]  # 2*lcs/(m+n) == 0.7 in exact arithmetic
    assert (10, 10, 7) in cases and len(cases) > 20
    above = 0
    for m, n, lcs in cases:
        target, pred = _pair(m, n, lcs)
        f = ref_f(target, pred)
        assert rouge_l_f(target, pred) == f
        filt = NearDuplicateFilter(0.7, [target])
        assert filt.is_duplicate(pred) == (f > 0.7), (m, n, lcs, f)
        assert filt.nearest(pred) == (target, f)
        assert filt.add(pred) == (f <= 0.7)
        above += f > 0.7
    # Float rounding puts some of these exact ties above 0.7 (rejected by rouge_score too) and some not.
    assert 0 < above < len(cases)
    # One token less or more on either side of the tie.
    for m, n, lcs in [(10, 10, 6), (10, 10, 8), (20, 20, 14), (13, 7, 7), (7, 13, 7)]:
        target, pred = _pair(m, n, lcs)
        assert NearDuplicateFilter(0.7, [target]).add(pred) == (ref_f(target, pred) <= 0.7)


def test_long_instructions():
    rng = random.Random(7)
    vocab = [f"w{i}" for i in range(40)]
    base = random_text(rng, vocab, 320, 320)
    words = base.split()
    near = " ".join(w for w in words if rng.random() > 0.2)  # ~80% of a 320-token text
    far = random_text(rng, vocab, 300, 340)
    short = " ".join(words[:50])  # shares a prefix with the long text; n <= 64 lane path
    pool = [base, far]
    for cand in (near, far, short, base, " ".join(reversed(words))):
        assert rouge_l_f(base, cand) == ref_f(base, cand)
        assert NearDuplicateFilter(0.7, pool).is_duplicate(cand) == any(ref_f(p, cand) > 0.7 for p in pool)
    assert len(near.split()) > 64 and not NearDuplicateFilter(0.7, pool).add(near)


@pytest.mark.parametrize("seed,lo,hi,threshold", [(0, 0, 10, 0.7), (1, 5, 14, 0.7), (2, 50, 75, 0.7),
                                                   (3, 1, 12, 0.5), (4, 1, 12, 0.0), (5, 1, 12, 1.0)])
def test_extend_matches_brute_force(seed, lo, hi, threshold):
    rng = random.Random(seed)
    vocab = ["a", "b", "c", "d", "e", "f", "the", "of", "x1", "y2"]
    seeds = [random_text(rng, vocab, lo, hi) for _ in range(15)]
    texts = []
    for _ in range(250 if hi < 40 else 50):
        if texts and rng.random() < 0.5:  # near-duplicate of an earlier text: drop/insert/swap tokens
            words = rng.choice(texts + seeds).split()
            for _ in range(rng.randint(1, 3)):
                i = rng.randrange(len(words) + 1)
                op = rng.random()
                if op < 0.4 and words:
                    del words[min(i, len(words) - 1)]
                elif op < 0.8:
                    words.insert(i, rng.choice(vocab))
                elif len(words) > 1:
                    j = min(i, len(words) - 2)
                    words[j], words[j + 1] = words[j + 1], words[j]
            texts.append(" ".join(words))
        else:
            texts.append(random_text(rng, vocab, lo, hi))
    expected = brute_extend(seeds, texts, threshold)
    filt = NearDuplicateFilter(threshold, seeds)
    assert filt.extend(texts) == expected
    assert len(filt) == len(seeds) + sum(expected)


def test_many_survivors_numpy_lanes():
    # Texts over a 4-word vocabulary share most tokens, so hundreds survive the bag bound and the
    # vectorised LCS (and add's most-promising-first chunk) does the work.
    rng = random.Random(99)
    vocab = ["a", "b", "c", "d"]
    pool = [random_text(rng, vocab, 8, 20) for _ in range(300)]
    filt = NearDuplicateFilter(0.75, pool)
    for _ in range(30):
        cand = random_text(rng, vocab, 8, 20)
        scores = [ref_f(p, cand) for p in pool]
        best = max(scores)
        assert filt.is_duplicate(cand) == (best > 0.75)
        assert filt.nearest(cand) == (pool[scores.index(best)], best)


def test_nearest_and_len():
    filt = NearDuplicateFilter()
    assert len(filt) == 0 and filt.nearest("anything") == (None, 0.0)
    assert filt.add("") and filt.add("...")  # empty texts score 0 against everything
    assert filt.nearest("write a poem") == ("", 0.0)  # all score 0: the earliest pooled text
    pool = ["Write a poem about cats.", "Write a poem about dogs.", "List three colors.", "write a poem about cats"]
    filt = NearDuplicateFilter(0.7, pool)  # seeds join unconditionally, duplicates included
    assert len(filt) == 4
    text, score = filt.nearest("Write a poem about cats!")
    assert (text, score) == (pool[0], 1.0)  # ties with pool[3]: the earliest wins
    assert filt.nearest("Write a poem about birds") == (pool[0], ref_f(pool[0], "Write a poem about birds"))
    assert filt.nearest("unrelated words only") == (pool[0], 0.0)
    assert not filt.add("write a poem about CATS") and len(filt) == 4
    assert filt.add("Name three famous painters.") and len(filt) == 5
    assert filt.nearest("name three famous painters")[0] == "Name three famous painters."
    assert filt.extend(["Name three famous painters!", "Describe a sunset."]) == [False, True]
    assert len(filt) == 6
    with pytest.raises(ValueError):
        NearDuplicateFilter(1.5)


def test_nearest_matches_brute_force_random():
    rng = random.Random(5)
    vocab = ["a", "b", "c", "d", "e", "the", "of", "to", "in", "x", "y", "z"]
    pool = [random_text(rng, vocab, 1, 15) for _ in range(200)]
    filt = NearDuplicateFilter(0.7, pool)
    for _ in range(100):
        cand = random_text(rng, vocab, 0, 15)
        scores = [ref_f(p, cand) for p in pool]
        best = max(scores)
        assert filt.nearest(cand) == (pool[scores.index(best)], best), cand
        assert filt.add(cand) == (best <= 0.7)  # add right after nearest reuses its maximum
        if best <= 0.7:
            pool.append(cand)


@pytest.mark.skipif(not SEEDS.exists(), reason="../shared/data/seed_tasks.jsonl not present")
@pytest.mark.slow
def test_real_seed_instructions():
    seeds = [json.loads(line)["instruction"] for line in SEEDS.read_text().splitlines()]
    rng = random.Random(0)
    cands = []
    for _ in range(120):  # edited seeds (near-duplicates) and spliced seeds (mostly novel)
        words = rng.choice(seeds).split()
        if rng.random() < 0.5:
            for _ in range(rng.randint(1, 4)):
                i = rng.randrange(len(words))
                if rng.random() < 0.5 and len(words) > 2:
                    del words[i]
                else:
                    words.insert(i, rng.choice(["please", "briefly", "the", "new", "given"]))
        else:
            other = rng.choice(seeds).split()
            words = words[: len(words) // 2] + other[len(other) // 2 :]
        cands.append(" ".join(words))
    expected = brute_extend(seeds, cands)
    assert 10 < sum(expected) < len(cands)
    filt = NearDuplicateFilter(0.7, seeds)
    assert filt.extend(cands) == expected
    pool = seeds + [c for c, ok in zip(cands, expected) if ok]
    for cand in cands[:30]:
        scores = [ref_f(p, cand) for p in pool]
        assert filt.nearest(cand) == (pool[scores.index(max(scores))], max(scores))
