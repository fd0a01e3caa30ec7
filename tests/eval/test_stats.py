"""Statistics of results: the paired tests reproduce scipy, the bootstrap interval covers the true mean
at about its stated rate, Holm's correction on a hand case."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as st

from recfunnel.eval.stats import (
    bootstrap_ci,
    holm,
    pack_vector,
    paired_test,
    t_interval,
    t_interval_of,
    unpack_vector,
)

A = np.array([0.0, 0.5, 1.0, 0.3869, 0.0, 0.6309, 1.0, 0.0, 0.5, 0.4307, 0.0, 1.0])
B = np.array([0.0, 0.3869, 1.0, 0.0, 0.0, 0.5, 0.6309, 0.0, 0.4307, 0.0, 0.3333, 0.5])


def test_paired_tests_reproduce_scipy_and_report_the_effect_size():
    got = paired_test(A, B)
    t = st.ttest_rel(A, B)
    w = st.wilcoxon(A, B)
    d = A - B
    assert got.n == 12
    assert got.t_stat == pytest.approx(t.statistic) and got.t_p == pytest.approx(t.pvalue)
    assert got.wilcoxon_stat == pytest.approx(w.statistic) and got.wilcoxon_p == pytest.approx(w.pvalue)
    assert got.mean_diff == pytest.approx(d.mean())
    assert got.d_z == pytest.approx(d.mean() / d.std(ddof=1))
    assert (got.mean_a, got.mean_b) == pytest.approx((A.mean(), B.mean()))


def test_identical_vectors_show_no_difference_and_unequal_lengths_are_refused():
    same = paired_test(A, A)
    assert (same.mean_diff, same.d_z, same.t_p, same.wilcoxon_p) == (0.0, 0.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="same users"):
        paired_test(A, B[:-1])


def test_bootstrap_interval_covers_the_true_mean_at_about_95_percent():
    # per-user-like metric: 0 for 70% of users, else uniform(0, 1); true mean 0.15
    rng = np.random.default_rng(7)
    true_mean, reps, covered = 0.3 * 0.5, 400, 0
    for rep in range(reps):
        x = np.where(rng.random(200) < 0.3, rng.random(200), 0.0)
        lo, hi = bootstrap_ci(x, n_boot=500, seed=rep)
        covered += lo <= true_mean <= hi
    assert 0.92 <= covered / reps <= 0.98


def test_bootstrap_interval_is_seeded_and_brackets_the_sample_mean():
    a = bootstrap_ci(A, seed=3)
    assert a == bootstrap_ci(A, seed=3)
    assert a[0] <= A.mean() <= a[1]
    # drawn in blocks or at once: the same interval for the same seed
    assert bootstrap_ci(A, seed=3, chunk_elems=len(A) * 7) == a


def test_t_interval_over_seeds_by_hand():
    lo, hi = t_interval([1.0, 2.0, 3.0])
    half = 4.302652729911275 / np.sqrt(3)  # t_{0.975, 2} * sd 1 / sqrt(3)
    assert (lo, hi) == pytest.approx((2 - half, 2 + half))
    assert t_interval([0.5]) == (0.5, 0.5)
    assert t_interval_of(2.0, 1.0, 3) == pytest.approx((lo, hi))  # from an aggregate row's mean and std


def test_holm_adjusts_step_down_and_keeps_the_order():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]).tolist() == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.6]).tolist() == pytest.approx([1.0, 1.0])
    got = holm([0.01, float("nan"), 0.02])
    assert np.isnan(got[1]) and got[[0, 2]].tolist() == pytest.approx([0.02, 0.02])


def test_packed_vectors_round_trip_as_float32():
    x = np.array([0.0, 1 / np.log2(3), 1.0, 0.25])
    assert unpack_vector(pack_vector(x)) == pytest.approx(x.astype(np.float32))
    assert unpack_vector([0.5, 1]).tolist() == [0.5, 1.0]
