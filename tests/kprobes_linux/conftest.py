"""Shared by the Linux kprobes tests: one boot of the committed Linux image per session,
kept as a snapshot (each test restores it), and the unprobed run from there -- what every
probed run must reproduce exactly."""

import pytest

from emu import Machine
from tests.linux import LINUX_IMAGE


@pytest.fixture(scope="session")
def linux_booted():
    """(machine, snapshot): Linux booted to where init is about to run, no kprobes."""
    m = Machine(LINUX_IMAGE)
    m.boot()
    return m, m.snapshot()


@pytest.fixture(scope="session")
def linux_reference(linux_booted):
    """The unprobed run from the boot snapshot: console, exit code, clock, insns."""
    m, snap = linux_booted
    m.restore(snap)
    result = m.run()
    ref = {"console": m.console, "exit_code": result.exit_code, "clock": m.clock.now,
           "insns": result.insns, "reason": result.reason}
    m.restore(snap)
    return ref


@pytest.fixture
def lm(linux_booted):
    """The booted Linux machine, restored to the boot snapshot."""
    m, snap = linux_booted
    m.restore(snap)
    return m
