"""The machine the events regressions run on: booted, kprobes installed before boot, and
the kprobe_events files over it."""

import pytest

from emu import Machine
from kprobes import Kprobes
from kprobes.events import KprobeEvents


@pytest.fixture
def ev():
    m = Machine()
    k = Kprobes(m)
    m.boot()
    return m, k, KprobeEvents(k)
