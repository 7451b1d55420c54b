"""scripts/claim_stats.py against textbook cases: the paired-t CI and TOST by their formulas
(and scipy), one case per verdict, pairing of seeds, paired against unpaired."""

import math
import statistics

import pytest
from scipy import stats

from scripts import claim_stats as cs

BASE = [10.0, 11.0, 12.0, 13.0]
COMP = [10.1, 11.3, 11.9, 13.2]  # differences 0.1, 0.3, -0.1, 0.2


def _seeds(values):
    return dict(enumerate(values))


def test_paired_ci_is_the_textbook_paired_t_interval():
    diffs = [c - b for b, c in zip(BASE, COMP)]
    mean, se = statistics.fmean(diffs), statistics.stdev(diffs) / math.sqrt(len(diffs))
    assert stats.t.ppf(0.975, 3) == pytest.approx(3.182, abs=5e-4)  # the printed t table
    half = stats.t.ppf(0.975, 3) * se
    low, high = cs.paired_ci(BASE, COMP)
    assert (low, high) == pytest.approx((mean - half, mean + half), rel=1e-9)
    assert (low, high) == pytest.approx((-0.14675, 0.39675), abs=1e-5)
    scipy_ci = stats.ttest_rel(COMP, BASE).confidence_interval(0.95)
    assert (low, high) == pytest.approx((scipy_ci.low, scipy_ci.high), rel=1e-12)


def test_tost_p_is_the_larger_one_sided_p():
    diffs = [c - b for b, c in zip(BASE, COMP)]
    mean, se = statistics.fmean(diffs), statistics.stdev(diffs) / math.sqrt(len(diffs))
    margin = 0.5
    p_low = stats.t.sf((mean + margin) / se, 3)  # H0: difference <= -margin
    p_high = stats.t.cdf((mean - margin) / se, 3)  # H0: difference >= +margin
    assert cs.tost_p(BASE, COMP, margin) == pytest.approx(max(p_low, p_high), rel=1e-9)
    assert cs.tost_p(BASE, COMP, margin) < 0.05
    # a margin smaller than the mean difference cannot be equivalent
    assert cs.tost_p(BASE, COMP, 0.1) > 0.5


@pytest.mark.parametrize(
    "comp_shift, margin, higher_is_better, crashed, expected",
    [
        ([0.1, 0.3, -0.1, 0.2], 0.5, True, (0, 0), "equivalent"),  # CI -0.15 .. +0.40
        ([0.1, 0.3, -0.1, 0.2], 0.3, True, (0, 0), "inconclusive"),  # CI crosses +0.3
        ([-1.9, -2.1, -2.0, -1.95], 0.5, True, (0, 0), "worse"),
        ([-1.9, -2.1, -2.0, -1.95], 0.5, False, (0, 0), "better"),  # lower is better: a loss
        ([1.9, 2.1, 2.0, 1.95], 0.5, True, (0, 0), "better"),
        ([1.9, 2.1, 2.0, 1.95], 0.5, False, (0, 0), "worse"),
        ([0.1, 0.3, -0.1, 0.2], 0.5, True, (0, 1), "crashed"),  # whatever the CI says
        ([0.1, 0.3, -0.1, 0.2], 0.5, True, (2, 0), "crashed"),
    ],
)
def test_one_case_per_verdict(comp_shift, margin, higher_is_better, crashed, expected):
    comp = [b + d for b, d in zip(BASE, comp_shift)]
    result = cs.compare(_seeds(BASE), _seeds(comp), margin, higher_is_better, crashed)
    assert result.verdict == expected
    assert result.n == 4 and result.dropped == 0 and result.crashed == crashed
    assert result.diff == pytest.approx(statistics.fmean(comp_shift))


def test_fewer_than_two_pairs_is_n_lt_2():
    one = cs.compare({0: 1.0, 1: 2.0}, {1: 2.5, 5: 9.0}, margin=1.0)
    assert one.verdict == "n<2" and one.n == 1 and one.dropped == 2
    assert one.diff == pytest.approx(0.5) and one.ci is None and one.p_tost is None
    none = cs.compare({0: 1.0}, {}, margin=1.0)
    assert none.verdict == "n<2" and none.n == 0 and none.diff is None


def test_seeds_pair_by_number_and_unpaired_ones_are_dropped_and_counted():
    pairs, dropped = cs.pair({0: 1.0, 1: 2.0, 2: 3.0}, {1: 2.1, 2: 3.1, 3: 9.0})
    assert pairs == [(2.0, 2.1), (3.0, 3.1)] and dropped == 2
    result = cs.compare({0: 1.0, 1: 2.0, 2: 3.0}, {1: 2.1, 2: 3.1, 3: 9.0}, margin=0.5)
    assert result.base == (2.0, 3.0) and result.comp == (2.1, 3.1)  # seed 3's 9.0 is not used
    assert result.diff == pytest.approx(0.1)


def test_pairing_removes_the_seeds_own_spread():
    # Seeds differ by 30 points, the optimizers by about 0.1: paired, that is equivalence within
    # 0.5; unpaired (Welch), the seeds' spread swamps it.
    base = [50.0, 60.0, 70.0, 80.0]
    comp = [50.1, 59.9, 70.2, 80.0]
    paired = cs.compare(_seeds(base), _seeds(comp), margin=0.5)
    assert paired.verdict == "equivalent"
    welch = stats.ttest_ind(comp, base, equal_var=False).confidence_interval(0.95)
    assert cs.verdict_of((welch.low, welch.high), 0.5) == "inconclusive"
    assert welch.high - welch.low > 10 * (paired.ci[1] - paired.ci[0])


def test_identical_differences_give_a_point_interval():
    result = cs.compare(_seeds([1.0, 2.0, 3.0]), _seeds([1.5, 2.5, 3.5]), margin=1.0)
    assert result.ci == pytest.approx((0.5, 0.5)) and result.p_tost == 0.0
    assert result.verdict == "equivalent"
    beyond = cs.compare(_seeds([1.0, 2.0, 3.0]), _seeds([3.0, 4.0, 5.0]), margin=1.0)
    assert beyond.verdict == "better" and beyond.p_tost == 1.0


@pytest.mark.parametrize("margin", [0.0, -1.0, float("nan"), float("inf")])
def test_the_margin_must_be_a_positive_number(margin):
    with pytest.raises(ValueError, match="margin must be a positive number"):
        cs.compare({0: 1.0, 1: 2.0}, {0: 1.0, 1: 2.0}, margin)
