"""How every benchmark measures: sides interleaved, repeated, reported as min/median/max.

The machine is shared and noisy, so a ratio is never taken between two blocks of runs
made one after the other: interleaved() runs one repetition of each side in turn, so a
slow minute slows every side alike, and a ratio is taken per round (side over peer in the
same round) before its min/median/max.  Each repetition is timed in CPU time (timed()).

Rows are (label, value, unit): value a number, or a Spread (min/median/max) that prints
as such.  target() is the row that states a target and whether this run met it.
"""

import gc
import statistics
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Spread:
    """min / median / max of one quantity over the rounds of a run."""
    lo: float
    mid: float
    hi: float

    @classmethod
    def of(cls, values):
        values = sorted(values)
        return cls(values[0], statistics.median(values), values[-1])

    def scaled(self, factor):
        return Spread(self.lo * factor, self.mid * factor, self.hi * factor)

    def __format__(self, spec):
        return f"{self.lo:.3f} / {self.mid:.3f} / {self.hi:.3f}"


def timed(fn):
    """The CPU time of one call of fn (this process's: the guest runs in it too), with
    the cyclic GC held off (collect first): garbage one side left must not be collected
    on the other's clock.  CPU time, not wall time: on a box shared with other builds a
    wall clock also counts the time this process waited for a core."""
    gc.collect()
    gc.disable()
    try:
        t = time.process_time()
        fn()
        return time.process_time() - t
    finally:
        gc.enable()


def interleaved(sides, rounds):
    """{name: fn} -> {name: [seconds per round]}: in each round every side once, the
    order rotated from round to round."""
    names = list(sides)
    times = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            times[name].append(timed(sides[name]))
    return times


def per_round(times, fn):
    """Spread of fn(round index) over the rounds of `times` (a dict of equal lists)."""
    return Spread.of(fn(i) for i in range(len(next(iter(times.values())))))


def net(times, side, base, scale=1.0):
    """Spread of (side - base) * scale per round: what `side` costs over `base`."""
    return per_round(times, lambda i: (times[side][i] - times[base][i]) * scale)


def net_ratio(times, a, b, base):
    """Spread of (a - base) / (b - base) per round: a's cost over base against b's."""
    return per_round(times, lambda i: (times[a][i] - times[base][i]) /
                     (times[b][i] - times[base][i]))


def cost_rows(times, base, scale, unit, sides):
    """Rows (label, net cost, unit) for [(label, side)]: each side over `base`."""
    return [(label, net(times, side, base, scale), unit) for label, side in sides]


def target(label, value, limit, unit, at_most=True):
    """The row that states a target: `value` (a number or the median of a Spread) against
    `limit`."""
    mid = value.mid if isinstance(value, Spread) else value
    met = mid <= limit if at_most else mid >= limit
    sign = "<=" if at_most else ">="
    return (label, value, f"{unit} (target {sign} {limit}: {'met' if met else 'NOT met'})")
