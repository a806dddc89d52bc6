"""The one property every fuzz target asserts, and the campaign's figures.

For each input, `run_input(category, fn)` runs `fn()` and requires

  * a result (whatever `fn` checks about it) or a KpemuError -- a clean, typed kpemu error
    with a one-line message; any other exception is an internal error and fails the input
    (hypothesis then shrinks it to the smallest input that still fails);
  * at most LIMITS[category].seconds of wall time;
  * at most LIMITS[category].mb megabytes of Python heap (tracemalloc's peak above what
    was allocated before the input: every byte a loader reads from a file lands there).

A hang cannot be caught by timing after the fact: faulthandler's watchdog dumps every
thread's stack and ends the process after HANG_SECONDS, so a hang fails the run loudly.

The counts (inputs, clean errors, results, slowest input, largest heap peak) are kept per
category and printed at the end of the session (tests/fuzz/conftest.py).
"""

import faulthandler
import os
import time
import tracemalloc
from dataclasses import dataclass

from hypothesis import HealthCheck, settings

from emu import KpemuError

HANG_SECONDS = 120


@dataclass(frozen=True)
class Limit:
    seconds: float
    mb: float


# Measured figures are a small fraction of these (see `make fuzz`'s summary): an image input
# is a Machine built, booted and run for at most 50,000 instructions; the others are a
# module load and unload, one file read, or one command parsed or run.
LIMITS = {
    "image": Limit(seconds=10, mb=64),
    "module": Limit(seconds=2, mb=64),
    "events-file": Limit(seconds=2, mb=32),
    "probe-definition": Limit(seconds=2, mb=16),
    "kprobe_events command": Limit(seconds=2, mb=16),
}

# Inputs per category: the short form `make test` runs, and what KPEMU_FUZZ_EXAMPLES asks
# for (`make fuzz` sets it).
SHORT = {"image": 50, "module": 120, "events-file": 100, "probe-definition": 150,
         "kprobe_events command": 100}


def examples(category):
    value = os.environ.get("KPEMU_FUZZ_EXAMPLES")
    return int(value) if value else SHORT[category]


def long_form():
    return bool(os.environ.get("KPEMU_FUZZ_EXAMPLES"))


settings.register_profile(
    "kpemu-fuzz", database=None, deadline=None, derandomize=not long_form(), print_blob=True,
    # The seeds are real files of tens of kilobytes and an image input boots a machine:
    # large and slow by hypothesis' measure, on purpose.
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.large_base_example])


def fuzz_settings(category):
    """The campaign's hypothesis settings for `category`: no example database (a failure
    prints its shrunk input; its fix brings a regression test), derandomized in the short
    form so `make test` always tries the same inputs, fresh random ones under `make fuzz`."""
    return settings(settings.get_profile("kpemu-fuzz"), max_examples=examples(category))


@dataclass
class Figures:
    inputs: int = 0
    errors: int = 0          # clean KpemuErrors
    results: int = 0
    max_seconds: float = 0.0
    max_mb: float = 0.0


FIGURES = {}


def run_input(category, fn):
    """Run one input of `category`; returns fn()'s result, or the KpemuError it raised."""
    limit = LIMITS[category]
    fig = FIGURES.setdefault(category, Figures())
    # Traced only while the input runs: hypothesis' own work between inputs stays fast.
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    faulthandler.dump_traceback_later(HANG_SECONDS, exit=True)
    start = time.perf_counter()
    try:
        outcome = fn()
        fig.results += 1
    except KpemuError as exc:
        outcome = exc
        fig.errors += 1
        message = str(exc)
        assert message and "\n" not in message.rstrip("\n"), \
            f"{type(exc).__name__} without a one-line message: {message!r}"
    finally:
        elapsed = time.perf_counter() - start
        faulthandler.cancel_dump_traceback_later()
        peak_mb = (tracemalloc.get_traced_memory()[1] - base) / 1e6
        tracemalloc.stop()
        fig.inputs += 1
        fig.max_seconds = max(fig.max_seconds, elapsed)
        fig.max_mb = max(fig.max_mb, peak_mb)
    assert elapsed <= limit.seconds, f"{category} input took {elapsed:.2f} s > {limit.seconds} s"
    assert peak_mb <= limit.mb, f"{category} input used {peak_mb:.1f} MB > {limit.mb} MB"
    return outcome


def summary_lines():
    if not FIGURES:
        return []
    lines = [f"{'category':<24}{'inputs':>8}{'errors':>8}{'results':>8}"
             f"{'max s':>8}{'max MB':>8}{'limits':>16}"]
    for category, fig in FIGURES.items():
        limit = LIMITS[category]
        lines.append(f"{category:<24}{fig.inputs:>8}{fig.errors:>8}{fig.results:>8}"
                     f"{fig.max_seconds:>8.3f}{fig.max_mb:>8.2f}"
                     f"{f'{limit.seconds:g} s, {limit.mb:g} MB':>16}")
    return lines
