"""One decision rule for every comparison in the book.

A comparison is a paired difference ``d = metric(A) − metric(B)`` over seeds × test clips with a
95 % interval ``[low, high]`` (``mmsa.robustness.paired_difference``: a bootstrap over seeds,
then clips).  The claim under test says which sign ``d`` should have (``expected_sign`` = +1 or
−1).  Then:

* **reproduced**   the interval excludes 0 on the claim's side;
* **contradicted** the interval excludes 0 on the other side;
* **inconclusive** the interval contains 0.

An inconclusive result is a finding only if the experiment could have seen the effect, so every
verdict carries the **minimum detectable effect** (MDE): the smallest true difference this design
detects with 80 % power at the 5 % level,  MDE = (z₀.₉₇₅ + z₀.₈₀) · SE ≈ 2.80 · SE, with the
standard error SE read from the interval's half-width (half-width = z₀.₉₇₅ · SE).

Two more classes keep apart what is not a reproduction:

* **exploratory** a study with one seed (no interval over training noise): it can suggest, not decide;
* **sanity**      a check that holds by construction or by a chosen size (e.g. a parameter count
                  matched on purpose): counted apart from the reproductions.
"""
from __future__ import annotations

from statistics import NormalDist

VERDICTS = ("reproduced", "contradicted", "inconclusive", "exploratory", "sanity")
POWER = 0.80


def mde(low: float, high: float, level: float = 0.95, power: float = POWER) -> float:
    """Minimum detectable effect of a design whose ``level`` interval is [low, high]:
    (z_{1-α/2} + z_{power}) · SE with SE = (high − low) / (2 · z_{1-α/2})."""
    if not high >= low:
        raise ValueError(f"interval must have low <= high, got [{low}, {high}]")
    z = NormalDist().inv_cdf(0.5 + level / 2)
    se = (high - low) / (2 * z)
    return float((z + NormalDist().inv_cdf(power)) * se)


def decide(low: float, high: float, expected_sign: int) -> str:
    """The verdict of a claim that the difference has sign ``expected_sign`` (+1 or −1), given
    the 95 % interval [low, high] of the paired difference."""
    if expected_sign not in (1, -1):
        raise ValueError(f"expected_sign must be +1 or -1, got {expected_sign!r}")
    if not high >= low:
        raise ValueError(f"interval must have low <= high, got [{low}, {high}]")
    if low > 0 or high < 0:
        return "reproduced" if (low > 0) == (expected_sign > 0) else "contradicted"
    return "inconclusive"


def describe(diff: float, low: float, high: float, expected_sign: int, level: float = 0.95,
             unit: str = "") -> str:
    """One line: verdict, the difference with its interval, and the MDE."""
    v = decide(low, high, expected_sign)
    return (f"{v}: {diff:+.3f}{unit} [{low:+.3f}, {high:+.3f}] ({int(round(100 * level))} % interval), "
            f"minimum detectable effect {mde(low, high, level):.3f}{unit}")


__all__ = ["VERDICTS", "decide", "mde", "describe"]
