"""Linux's own kprobes KUnit suite and the guest's own kprobe_events trace, under kpemu and
under QEMU, in one boot of each (kunit.enable=1 kpemu_tracefs=1): every case passes on both,
the KTAP reports are the same, the guest's traces are the same line for line (the "counter"
clock makes even the timestamps comparable), and the consoles differ only in the lines that
already differ without the switches (tests/qemu/test_linux_compare.py)."""

import shutil

import pytest

from emu.qemu import compare
from tests.linux import LINUX_IMAGE
from tests.linux.guest import (KUNIT_SWITCH, TRACEFS_SWITCH, cmdline_with, events_of,
                               guest_trace, parse_ktap)
from tests.linux.test_linux_kunit import check_kprobes_suite_passed
from tests.qemu.test_linux_compare import EXPECTED

pytestmark = [
    pytest.mark.qemu, pytest.mark.slow,
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None,
                       reason="qemu-system-x86_64 not installed"),
]


@pytest.fixture(scope="module")
def both():
    return compare(LINUX_IMAGE, cmdline=cmdline_with(KUNIT_SWITCH, TRACEFS_SWITCH),
                   timeout=300)


def test_every_kprobes_kunit_case_passes_on_kpemu_as_under_qemu(both):
    assert (both.kpemu_exit, both.qemu_exit) == (0, 0)
    kpemu = check_kprobes_suite_passed(both.kpemu_console)
    qemu = check_kprobes_suite_passed(both.qemu_console)
    assert kpemu == qemu


def test_the_guests_own_trace_is_the_same_under_qemu(both):
    kpemu, qemu = guest_trace(both.kpemu_console), guest_trace(both.qemu_console)
    assert kpemu == qemu
    assert kpemu.entries == kpemu.written == len(kpemu.lines) > 20
    assert {name for name, _ in events_of(kpemu)} == {"op", "openret", "clone", "write"}


def test_the_switches_add_no_console_difference(both):
    assert both.unexplained == []
    assert [(side, line[:len(start)]) for (side, line, _), (_, start)
            in zip(both.differences, EXPECTED)] == EXPECTED
    assert len(both.differences) == len(EXPECTED)
    assert both.agrees and parse_ktap(both.kpemu_console).totals["pass"] == 6
