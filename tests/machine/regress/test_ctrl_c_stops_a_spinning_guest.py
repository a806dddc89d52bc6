"""Regression: Ctrl-C was ignored while the guest spun with interrupts off -- the run was
one emu_start to the end of time, and Python never got control to see the signal."""

import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_ctrl_c_stops_a_guest_spinning_with_interrupts_off(probe_targets_o):
    """mod_spin loops forever; a probe sends the workload there with IF clear, so no
    timer tick ever ends a slice.  SIGINT stops it within a slice, at an instruction
    boundary, as a KeyboardInterrupt from m.run() naming where.  The child starts with
    Python's own SIGINT handler, as a program run from a terminal has it: started from a
    background job (`make test &`) it would inherit SIGINT ignored, which m.run() leaves
    alone like any handler the program chose."""
    proc = subprocess.Popen(
        [sys.executable, "-c",
         "import signal, sys\n"
         "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
         "from emu import Machine\n"
         "from kprobes import Kprobe, Kprobes\n"
         "m = Machine(); k = Kprobes(m)\n"
         f"m.load_module({str(probe_targets_o)!r})\n"
         "spin = m.symbols.lookup_name('mod_spin')\n"
         "def go(p, regs):\n"
         "    regs.ip = spin; regs.flags &= ~0x200; return 1\n"
         "m.boot(); k.register_kprobe(Kprobe(symbol_name='sys_mkdir', pre_handler=go))\n"
         "print('running', flush=True)\n"
         "try:\n"
         "    m.run()\n"
         "except KeyboardInterrupt as exc:\n"
         "    print(exc, flush=True)\n"
         "    ip = m.engine.reg('ip'); f = m.engine.reg('flags')\n"
         "    print(m.symbols.format(ip).split('+')[0], f & 0x200, flush=True)\n"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=ROOT)
    try:
        assert proc.stdout.readline() == "running\n"
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        out, errs = proc.communicate(timeout=30)
    finally:
        proc.kill()                 # a child that did not stop must not spin on
        proc.wait()
    assert proc.returncode == 0, errs
    first, where = out.splitlines()
    assert first.startswith("kpemu: interrupted at mod_spin+") and "instructions" in first
    assert where == "mod_spin 0"
