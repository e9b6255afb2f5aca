"""Intervals for accuracies: a proportion's Wilson interval, the paired difference of two methods on the same
items, and the t-interval of a mean over seeds.

scipy is imported on first use, which keeps `import c2c_hf` (whose public API re-exports the benchmark loaders
of this package) light.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from statistics import NormalDist
from typing import Any

# The two-sided 95% quantile of the standard normal distribution (1.95996...).
Z_95 = NormalDist().inv_cdf(0.975)


def wilson_interval(correct: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of the proportion `correct / n` (95% by default); `(0, 1)` for `n == 0`.

    The bounds are exactly 0 at 0 correct and exactly 1 at `n` correct (no rounding residue, so a table never
    shows "-0.0")."""
    if n == 0:
        return 0.0, 1.0
    from scipy.stats import binomtest

    low, high = binomtest(correct, n).proportion_ci(confidence_level=confidence, method="wilson")
    return (0.0 if correct == 0 else float(low)), (1.0 if correct == n else float(high))


def paired_difference(
    predictions: Sequence[Mapping[str, Any]], baseline: Sequence[Mapping[str, Any]], confidence: float = 0.95
) -> dict[str, Any]:
    """Accuracy of `predictions` minus that of `baseline` on the same items (report prediction dicts, matched by
    `id`), with the Wald interval of a paired difference (95% by default): two methods asked the same questions
    differ only where one is right and the other wrong, so this interval is narrower than two Wilson intervals.

    The interval is the normal one of the mean of the per-item differences (each -1, 0 or +1) with their population
    variance `(only_this + only_baseline) / n - difference^2`. Returns `difference`, `ci95`, `n`, `only_this` (items
    only `predictions` gets right) and `only_baseline`. Raises `ValueError` when the two were evaluated on different
    items."""
    correct = {p["id"]: bool(p["correct"]) for p in predictions}
    baseline_correct = {p["id"]: bool(p["correct"]) for p in baseline}
    if correct.keys() != baseline_correct.keys():
        raise ValueError(
            "Paired comparison needs the same items; item ids only in the predictions: "
            f"{len(correct.keys() - baseline_correct.keys())}, only in the baseline: "
            f"{len(baseline_correct.keys() - correct.keys())}. Evaluate both with the same --limit and --seed."
        )
    ids = list(correct)
    only_this = sum(correct[i] and not baseline_correct[i] for i in ids)
    only_baseline = sum(baseline_correct[i] and not correct[i] for i in ids)
    differences = [float(correct[i]) - float(baseline_correct[i]) for i in ids]  # each -1, 0 or +1
    difference, (low, high) = normal_mean_interval(differences, confidence) if ids else (0.0, (0.0, 0.0))
    n = len(ids)
    return {
        "difference": difference,
        "ci95": [low, high],
        "n": n,
        "only_this": only_this,
        "only_baseline": only_baseline,
    }


def normal_mean_interval(
    values: Sequence[float], confidence: float = 0.95, ddof: int = 0
) -> tuple[float, tuple[float, float]]:
    """`(mean, (low, high))`: the mean of per-item `values` and its normal-approximation (Wald) interval, with the
    variance's `ddof` (0: the population variance, as for paired right/wrong differences; 1: the sample variance).
    For a mean over many items (questions), not over a few seeds (`t_interval`)."""
    from scipy.stats import norm

    mean = math.fsum(values) / len(values)
    spread = math.fsum((v - mean) ** 2 for v in values)
    variance = spread / (len(values) - ddof) if len(values) > ddof else 0.0
    half = float(norm.ppf(0.5 + confidence / 2)) * math.sqrt(variance / len(values))
    return mean, (mean - half, mean + half)


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, tuple[float, float]]:
    """`(mean, (low, high))`: the mean of `values` (e.g. one accuracy per seed) and its Student t-interval with
    `len(values) - 1` degrees of freedom (95% by default). Needs at least two values; equal values give a
    zero-width interval."""
    if len(values) < 2:
        raise ValueError(f"A t-interval needs at least two values (one per seed), got {len(values)}.")
    from scipy.stats import sem, t

    mean = math.fsum(values) / len(values)
    spread = float(sem(values))  # standard error of the mean, ddof=1
    if spread == 0.0:
        return mean, (mean, mean)
    low, high = t.interval(confidence, len(values) - 1, loc=mean, scale=spread)
    return mean, (float(low), float(high))
