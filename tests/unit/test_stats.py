"""The statistics the reports share: the exact sign test by hand, bootstrap intervals of a mean."""

import numpy as np
import pytest

from refine_af.stats import bootstrap_ci, percentile_ci, resample, sign_test


@pytest.mark.parametrize("wins, losses, p", [
    (9, 1, 22 / 1024),  # 2 * (C(10,0) + C(10,1)) / 2^10
    (1, 9, 22 / 1024),
    (10, 0, 2 / 1024),
    (4, 1, 12 / 32),  # 2 * (1 + 5) / 32
    (3, 2, 1.0),  # 2 * (1 + 5 + 10) / 32 = 1: capped
    (7, 5, 3172 / 4096),  # 2 * (1 + 12 + 66 + 220 + 495 + 792) / 2^12
    (1, 0, 1.0),
    (0, 0, 1.0),  # nothing decided: no evidence either way
])
def test_sign_test_by_hand(wins, losses, p):
    assert sign_test(wins, losses) == pytest.approx(p, rel=1e-12)


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


def test_resamples_are_seeded_and_shared_between_statistics():
    x = np.arange(10.0)
    idx = resample(x.size, 500, seed=3)
    assert idx.shape == (500, 10) and np.array_equal(idx, resample(10, 500, seed=3))
    assert bootstrap_ci(x, n_boot=500, seed=3) == (4.5, percentile_ci(x, idx, 0.95))
    # paired: the same resamples of x and x + 1 move together, so the difference's interval is a point
    assert percentile_ci((x + 1) - x, idx, 0.95) == [1.0, 1.0]
    assert percentile_ci(x + 1, idx, 0.95) == pytest.approx([v + 1 for v in percentile_ci(x, idx, 0.95)])
