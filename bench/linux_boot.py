"""The Linux guest (kernel_images/linux): `kpemu boot kernel_images/linux/vmlinux` to
power-off, in-process, against QEMU's wall time for the same run (-icount shift=0,sleep=off,
the same image, initramfs and command line: emu.qemu.run_qemu).  The two sides are
interleaved and repeated; min/median/max of each, the instructions executed and kpemu's
instructions per second.  The issue's target is at most 3 s for kpemu's run on this
machine."""

import statistics
import time

from emu import Machine
from emu.qemu import qemu_binary, run_qemu
from tests.linux import LINUX_IMAGE

REPEAT = 3


def _kpemu():
    t0 = time.perf_counter()
    m = Machine(LINUX_IMAGE)
    result = m.run()
    wall = time.perf_counter() - t0
    assert (result.reason, result.exit_code) == ("halt", 0), result
    return wall, m


def _qemu(m):
    t0 = time.perf_counter()
    q = run_qemu(LINUX_IMAGE, m.cmdline, linux=True, initrd=m.guest.initrd_path, timeout=240)
    wall = time.perf_counter() - t0
    assert q.exit_code == 0, q.status
    return wall


def _stats(label, values, unit="s"):
    return [(f"{label} min/median/max", f"{min(values):.2f} / {statistics.median(values):.2f}"
             f" / {max(values):.2f}", unit)]


def run():
    kpemu, qemu, m = [], [], None
    have_qemu = qemu_binary() is not None
    for _ in range(REPEAT):
        wall, m = _kpemu()
        kpemu.append(wall)
        if have_qemu:
            qemu.append(_qemu(m))
    rows = [("linux: instructions executed", m.clock.executed, "power-on to power-off"),
            ("linux: clock (executed + idle)", m.clock.now, "ns of guest time")]
    rows += _stats("linux: kpemu boot wall", kpemu)
    rows.append(("linux: kpemu M instructions/s (median run)",
                 round(m.clock.executed / statistics.median(kpemu) / 1e6, 2), "M/s"))
    if have_qemu:
        rows += _stats("linux: qemu icount wall", qemu)
        rows.append(("linux: kpemu / qemu wall (medians)",
                     round(statistics.median(kpemu) / statistics.median(qemu), 2), "ratio"))
    else:
        rows.append(("linux: qemu icount wall", "-", "qemu-system-x86_64 not installed"))
    return rows
