"""Is the compared optimizer the same as its baseline on one metric? Paired seeds, a paired-t 95%
confidence interval of the mean difference, TOST against an equivalence margin, and a verdict.

The seeds of the two sides are paired (seed k of the baseline with seed k of the compared run:
they share the data order and initialization, so their difference removes the seed's own
effect); a seed that only one side has is dropped and counted. Differences are compared -
baseline, in the metric's units.

Verdicts (:data:`VERDICTS`): ``equivalent`` when the 95% CI lies inside (-margin, +margin);
``worse`` / ``better`` when it lies entirely beyond the margin on the bad / good side (which
side is bad depends on whether higher is better); ``inconclusive`` when it overlaps an edge of
the margin; ``crashed`` when a seed of either side crashed (NaN/inf loss) or fell under the task's
divergence floor; ``n<2`` with fewer than two pairs (no variance, no interval).
"""

import math
import statistics
from dataclasses import dataclass

from scipy import stats

VERDICTS = ("equivalent", "better", "worse", "inconclusive", "crashed", "n<2")
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Comparison:
    """One metric of one claim: the paired values and what they say.

    base, comp: the values of the paired seeds, in seed order; dropped: seeds only one side has;
    diff: mean of comp - base; ci: its CI at :data:`CONFIDENCE` (None with fewer than 2 pairs);
    p_tost: the TOST p-value against +-margin (None likewise); crashed: (baseline, compared)
    seeds that crashed or diverged; verdict: one of :data:`VERDICTS`.
    """

    base: tuple
    comp: tuple
    dropped: int
    margin: float
    higher_is_better: bool
    diff: float | None
    ci: tuple | None
    p_tost: float | None
    crashed: tuple
    verdict: str

    @property
    def n(self) -> int:
        """Number of paired seeds."""
        return len(self.base)


def pair(base: dict, comp: dict) -> tuple[list, int]:
    """([(baseline value, compared value)] of the seeds both {seed: value} maps have, in seed
    order; the number of seeds only one of them has)."""
    shared = sorted(set(base) & set(comp))
    return [(base[s], comp[s]) for s in shared], len(set(base) ^ set(comp))


def _constant(diffs) -> bool:
    return max(diffs) - min(diffs) <= 1e-12 * max(1.0, abs(statistics.fmean(diffs)))


def paired_ci(base, comp, confidence=CONFIDENCE) -> tuple[float, float]:
    """Two-sided CI of mean(comp - base) by the paired t test (scipy.stats.ttest_rel); a point
    when every difference is the same (the t statistic is then undefined)."""
    diffs = [c - b for b, c in zip(base, comp)]
    if _constant(diffs):
        mean = statistics.fmean(diffs)
        return mean, mean
    ci = stats.ttest_rel(comp, base).confidence_interval(confidence)
    return float(ci.low), float(ci.high)


def tost_p(base, comp, margin) -> float:
    """p-value of the two one-sided paired t tests of H0: mean(comp - base) <= -margin and
    H0: mean(comp - base) >= +margin; the larger of the two. Small: equivalent within margin."""
    diffs = [c - b for b, c in zip(base, comp)]
    if _constant(diffs):
        return 0.0 if abs(statistics.fmean(diffs)) < margin else 1.0
    lower = stats.ttest_1samp(diffs, -margin, alternative="greater").pvalue
    upper = stats.ttest_1samp(diffs, margin, alternative="less").pvalue
    return float(max(lower, upper))


def verdict_of(ci, margin, higher_is_better=True) -> str:
    """equivalent / better / worse / inconclusive for a CI of compared - baseline."""
    low, high = ci
    if -margin < low and high < margin:
        return "equivalent"
    if high < -margin:
        return "worse" if higher_is_better else "better"
    if low > margin:
        return "better" if higher_is_better else "worse"
    return "inconclusive"


def compare(base: dict, comp: dict, margin: float, higher_is_better: bool = True,
            crashed: tuple = (0, 0), confidence: float = CONFIDENCE) -> Comparison:
    """The verdict on one metric. base, comp: {seed: value} of the finite values of each side;
    margin: the equivalence margin (> 0, the metric's units); crashed: (baseline, compared)
    counts of crashed or diverged seeds."""
    if not margin > 0 or not math.isfinite(margin):
        raise ValueError(f"margin must be a positive number, got {margin!r}")
    pairs, dropped = pair(base, comp)
    b, c = tuple(p[0] for p in pairs), tuple(p[1] for p in pairs)
    diff = ci = p = None
    if pairs:
        diff = statistics.fmean(y - x for x, y in pairs)
    if len(pairs) >= 2:
        ci, p = paired_ci(b, c, confidence), tost_p(b, c, margin)
    if any(crashed):
        text = "crashed"
    elif ci is None:
        text = "n<2"
    else:
        text = verdict_of(ci, margin, higher_is_better)
    return Comparison(base=b, comp=c, dropped=dropped, margin=margin,
                      higher_is_better=higher_is_better, diff=diff, ci=ci, p_tost=p,
                      crashed=tuple(crashed), verdict=text)
