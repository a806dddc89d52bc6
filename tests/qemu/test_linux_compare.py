"""Linux under kpemu and under QEMU icount (-cpu Haswell -machine pc,i8042=off), same image,
initramfs and command line: the same exit code, and every console line that differs has a
known cause (emu.qemu.LINUX_DIFFERENCES, docs/qemu.md).  A new difference fails here; the
list of explained lines is pinned so that a cause that went away is noticed too."""

import shutil

import pytest

from emu.qemu import LINUX_MACHINE, compare
from tests.linux import LINUX_IMAGE

pytestmark = [
    pytest.mark.qemu, pytest.mark.slow,
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None,
                       reason="qemu-system-x86_64 not installed"),
]

# The differing lines, as (side, start of the line).
EXPECTED = [
    ("qemu", "found SMP MP-table at "), ("kpemu", "No local APIC present"),
    ("kpemu", "APIC: disable apic facility"), ("kpemu", "APIC: switched to apic NOOP"),
    ("qemu", "Intel MultiProcessor Specification v1.4"), ("qemu", "MPTABLE: OEM ID: BOCHSCPU"),
    ("qemu", "MPTABLE: Product ID: 0.1"), ("qemu", "MPTABLE: APIC at: 0xFEE00000"),
    ("qemu", "Processor #0 (Bootup-CPU)"), ("qemu", "IOAPIC[0]: apic_id 0"),
    ("qemu", "Processors: 1"), ("kpemu", "NR_IRQS: 4352, nr_irqs: 24"),
    ("qemu", "NR_IRQS: 4352, nr_irqs: 48"),
    ("qemu", "SRBDS: Unknown: Dependent on hypervisor status"),
    ("kpemu", "x86/fpu: Enabled xstate features 0x3, context size is 576 bytes"),
    ("qemu", "x86/fpu: Supporting XSAVE feature 0x004: 'AVX registers'"),
    ("qemu", "x86/fpu: xstate_offset[2]:  576, xstate_sizes[2]:  256"),
    ("qemu", "x86/fpu: Enabled xstate features 0x7, context size is 832 bytes"),
    ("kpemu", "signal: max sigframe size: 1104"), ("qemu", "signal: max sigframe size: 1360"),
    ("kpemu", "sched_clock: Marking stable ("), ("qemu", "sched_clock: Marking stable ("),
]


def test_linux_console_agrees_with_qemu_but_for_explained_lines():
    c = compare(LINUX_IMAGE, timeout=240)
    assert c.kind == "linux"
    assert set(LINUX_MACHINE) <= set(c.qemu_argv) and "-initrd" in c.qemu_argv
    assert (c.kpemu_exit, c.qemu_exit) == (0, 0)
    assert c.unexplained == []
    assert [(side, line[:len(start)]) for (side, line, _), (_, start)
            in zip(c.differences, EXPECTED)] == EXPECTED
    assert len(c.differences) == len(EXPECTED)
    assert c.agrees and not c.identical
    tail = c.kpemu_console[c.kpemu_console.index(b"Run /init as init process"):]
    assert c.qemu_console.endswith(tail)
