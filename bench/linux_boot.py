"""The Linux guest (kernel_images/linux): the command the issue names, `kpemu boot
kernel_images/linux/vmlinux`, to power-off -- a fresh process each time, so Python's
start-up, the imports and reading the image count, as they do for a user -- against QEMU's
wall time for the same run (-icount shift=0,sleep=off, the same image, initramfs and
command line: emu.qemu.run_qemu).  The two sides are interleaved and repeated; min/median/
max of each, the instructions the run executed (as kpemu's summary line reports them) and
kpemu's instructions per second.  The target: at most 3 s for kpemu's run on this
machine."""

import re
import resource
import statistics
import subprocess
import sys
import time

from emu import Machine
from emu.qemu import qemu_binary, run_qemu
from tests.linux import LINUX_IMAGE

REPEAT = 3
TARGET_S = 3.0
_SUMMARY = re.compile(rb"powered off with exit code 0: (\d+) instructions executed, "
                      rb"clock (\d+)")


def _children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _kpemu():
    t0, c0 = time.perf_counter(), _children_cpu()
    p = subprocess.run([sys.executable, "-m", "kprobes", "boot", LINUX_IMAGE],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=240,
                       check=False)
    wall, cpu = time.perf_counter() - t0, _children_cpu() - c0
    found = _SUMMARY.search(p.stderr)
    assert p.returncode == 0 and found, (p.returncode, p.stderr[-500:])
    return wall, cpu, int(found.group(1)), int(found.group(2))


def _qemu(cmdline, initrd):
    t0, c0 = time.perf_counter(), _children_cpu()
    q = run_qemu(LINUX_IMAGE, cmdline, linux=True, initrd=initrd, timeout=240)
    wall, cpu = time.perf_counter() - t0, _children_cpu() - c0
    assert q.exit_code == 0, q.status
    return wall, cpu


def _stats(label, values, unit="s"):
    return [(f"{label} min/median/max", f"{min(values):.2f} / {statistics.median(values):.2f}"
             f" / {max(values):.2f}", unit)]


def run():
    kpemu, kpemu_cpu, qemu, qemu_cpu = [], [], [], []
    have_qemu = qemu_binary() is not None
    m = Machine(LINUX_IMAGE)            # (not run: QEMU's command line and initramfs)
    for _ in range(REPEAT):
        wall, cpu, executed, clock = _kpemu()
        kpemu.append(wall)
        kpemu_cpu.append(cpu)
        if have_qemu:
            wall, cpu = _qemu(m.cmdline, m.guest.initrd_path)
            qemu.append(wall)
            qemu_cpu.append(cpu)
    mid = statistics.median(kpemu)
    rows = [("linux: instructions executed", executed, "power-on to power-off"),
            ("linux: clock (executed + idle)", clock, "ns of guest time")]
    rows += _stats("linux: `kpemu boot` wall", kpemu)
    rows += _stats("linux: `kpemu boot` CPU", kpemu_cpu)
    rows.append(("linux: `kpemu boot` wall, median", round(mid, 2),
                 f"s (target <= {TARGET_S}: {'met' if mid <= TARGET_S else 'NOT met'})"))
    for label, times in (("wall", kpemu), ("CPU", kpemu_cpu)):
        rows.append((f"linux: kpemu M instructions/s ({label}, whole command, median)",
                     round(executed / statistics.median(times) / 1e6, 2), "M/s"))
    if have_qemu:
        rows += _stats("linux: qemu icount wall", qemu)
        rows += _stats("linux: qemu icount CPU", qemu_cpu)
        for label, a, b in (("wall", kpemu, qemu), ("CPU", kpemu_cpu, qemu_cpu)):
            rows.append((f"linux: kpemu / qemu {label} (medians)",
                         round(statistics.median(a) / statistics.median(b), 2), "ratio"))
    else:
        rows.append(("linux: qemu icount wall", "-", "qemu-system-x86_64 not installed"))
    return rows
