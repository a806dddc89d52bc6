"""The same image under QEMU, on an instruction-count clock, and a byte-for-byte comparison
with kpemu (issue 3; docs/qemu.md).

QEMU runs with exactly the command line the README documents:

    qemu-system-x86_64 -accel tcg -nographic -no-reboot -net none \\
        -icount shift=0,sleep=off -device isa-debug-exit,iobase=0xf4,iosize=0x04 \\
        -kernel IMAGE -append CMDLINE

With `-icount shift=0,sleep=off` one guest instruction is one nanosecond of virtual time and
an idle `hlt` warps the clock to the next timer deadline, which is what kpemu's clock does, so
the two machines must print the same bytes.

Where the kernel's output starts.  With -nographic the serial port also carries SeaBIOS's
own output: escape codes, a banner line, then "Booting from ROM.." with no newline, and the
kernel's first byte follows directly on that line.  The rule, in order:
  1. when the caller knows the kernel's first line (compare() takes it from kpemu's
     console), QEMU's output is cut at the first occurrence of that line (with its newline);
  2. otherwise, or when that line is not in the output (the kernel printed something else
     first), it is cut right after the last "Booting from ROM.." (SeaBIOS's last words
     before it jumps into the kernel);
  3. if neither is found, nothing is cut.
Everything before the cut is returned separately as `firmware`.

Exit status.  Writing v to isa-debug-exit (port 0xf4) makes QEMU exit with (v << 1) | 1;
any even status (0 after a triple fault with -no-reboot, 1's neighbours from QEMU errors) is
not a guest power-off and decodes to exit_code None.  A QEMU that has not powered off
within the timeout is killed: its output so far is kept, status and exit_code are None and
timed_out is set (a guest that never wakes from hlt does this under QEMU).

Must not import: unicorn, kprobes (compare() imports emu.machine only when called).
"""

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from emu.errors import EmuError

QEMU = "qemu-system-x86_64"
DEFAULT_TIMEOUT = 300            # seconds of host time for one QEMU run
FIRMWARE_LAST_WORDS = b"Booting from ROM.."
SUMMARY_RE = re.compile(rb"jiffies (\d+)")
TSC_RE = re.compile(rb"tsc delta (\d+)")


class QemuNotFound(EmuError):
    """qemu-system-x86_64 is not on PATH."""


def qemu_binary(qemu=QEMU):
    """Path of the QEMU binary, or None when it is not installed."""
    return shutil.which(qemu)


def qemu_argv(image, cmdline="", qemu=QEMU):
    """The matching QEMU command line (argv) for `image` and `cmdline`."""
    return [qemu, "-accel", "tcg", "-nographic", "-no-reboot", "-net", "none",
            "-icount", "shift=0,sleep=off",
            "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
            "-kernel", os.fspath(image), "-append", cmdline]


def decode_status(status):
    """QEMU's exit status -> the value the guest wrote to isa-debug-exit, or None."""
    if status is None or status < 0 or not status & 1:
        return None
    return status >> 1


def split_firmware(output, first_line=None):
    """(firmware, kernel) bytes of QEMU's serial output, by the rule in the module doc."""
    if first_line:
        at = output.find(first_line)
        if at >= 0:
            return output[:at], output[at:]
    at = output.rfind(FIRMWARE_LAST_WORDS)
    if at >= 0:
        at += len(FIRMWARE_LAST_WORDS)
        return output[:at], output[at:]
    return b"", output


@dataclass(frozen=True)
class QemuRun:
    """One QEMU boot.  Unpacks as (console, exit_code, status)."""
    console: bytes          # the kernel's bytes, firmware output removed
    exit_code: int          # decoded from (v << 1) | 1, None if QEMU's status is not that
    status: int             # QEMU's raw exit status (None if it was killed at the timeout)
    firmware: bytes = b""   # what came before the kernel's first byte
    stderr: bytes = b""
    argv: tuple = ()
    timed_out: bool = False
    timeout: float = None

    def __iter__(self):
        return iter((self.console, self.exit_code, self.status))


def run_qemu(image=None, cmdline="", first_line=None, timeout=DEFAULT_TIMEOUT, qemu=QEMU):
    """Boot `image` (default: the toykernel) under QEMU icount and return a QemuRun.
    `first_line` is the kernel's first console line if known (see the module doc).  Raises
    QemuNotFound when QEMU is not installed; a QEMU still running after `timeout` seconds
    is killed and its output so far returned (timed_out=True)."""
    if image is None:
        image = default_image()
    binary = qemu_binary(qemu)
    if binary is None:
        raise QemuNotFound(f"{qemu} not installed (not found on PATH): cannot run "
                           "the image under QEMU")
    argv = qemu_argv(image, cmdline, qemu)
    try:
        proc = subprocess.run([binary] + argv[1:], stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:       # run() has killed it and kept its output
        firmware, console = split_firmware(exc.output or b"", first_line)
        return QemuRun(console, None, None, firmware, exc.stderr or b"", tuple(argv),
                       timed_out=True, timeout=timeout)
    firmware, console = split_firmware(proc.stdout, first_line)
    return QemuRun(console, decode_status(proc.returncode), proc.returncode, firmware,
                   proc.stderr, tuple(argv), timeout=timeout)


def default_image():
    """emu.machine.DEFAULT_IMAGE, without importing the machine."""
    return Path(__file__).resolve().parent.parent / "kernel_images" / "toykernel" / "vmlinux"


# -- comparison -----------------------------------------------------------------------

def parse_jiffies(console):
    """The `jiffies N` of the kernel's summary line (the last one printed), or None."""
    found = SUMMARY_RE.findall(console)
    return int(found[-1]) if found else None


def parse_tsc_delta(console):
    found = TSC_RE.findall(console)
    return int(found[-1]) if found else None


def first_line_of(console):
    """The first complete line (newline included) of a console, or None."""
    nl = console.find(b"\n")
    return console[:nl + 1] if nl >= 0 else None


def first_difference(a, b):
    """(line number from 1, line of a, line of b) of the first line that differs, lines
    with their newline; a side that has ended gives None.  None when a == b."""
    if a == b:
        return None
    la, lb = a.splitlines(keepends=True), b.splitlines(keepends=True)
    for i in range(max(len(la), len(lb))):
        x = la[i] if i < len(la) else None
        y = lb[i] if i < len(lb) else None
        if x != y:
            return i + 1, x, y
    raise AssertionError("unequal byte strings with equal lines")  # pragma: no cover


@dataclass
class Comparison:
    cmdline: str
    identical: bool                 # consoles byte-identical and the same exit code
    kpemu_console: bytes
    qemu_console: bytes
    kpemu_exit: int                 # None if kpemu did not power off
    qemu_exit: int                  # None if QEMU's status is not (v << 1) | 1
    qemu_status: int                # None if QEMU was killed at the timeout
    kpemu_reason: str               # RunResult.reason of kpemu's run: "halt", "oops", "limit"
    line: int = None                # first differing line (from 1), None if consoles agree
    kpemu_line: bytes = None
    qemu_line: bytes = None
    kpemu_jiffies: int = None       # printed by the kernel in its summary line
    qemu_jiffies: int = None
    kpemu_pit_ticks: int = None     # PIT channel-0 edges kpemu raised up to power-off
    kpemu_irqs: int = None          # interrupts kpemu delivered through the PIC
    kpemu_final_jiffies: int = None  # the guest's `jiffies` variable at power-off
    kpemu_insns: int = None         # kpemu's clock at power-off: executed + idle (= QEMU ns)
    kpemu_executed: int = None      # guest instructions kpemu really executed
    kpemu_idle: int = None          # clock the idle hlt jumps skipped
    tsc_delta: int = None           # the kernel's printed `tsc delta` (kpemu's console)
    oops: str = None                # kpemu's oops report, if it had one
    firmware: bytes = b""
    qemu_argv: tuple = ()
    qemu_timed_out: bool = False
    qemu_timeout: float = None

    @property
    def nbytes(self):
        return len(self.kpemu_console)

    @property
    def nlines(self):
        return len(self.kpemu_console.splitlines())

    @property
    def consoles_identical(self):
        return self.kpemu_console == self.qemu_console


def run_kpemu(image=None, cmdline="", echo=None, max_insns=None):
    """Boot `image` in kpemu to power-off; returns the Machine and the last RunResult."""
    from emu.machine import Machine    # imports unicorn (through emu.engine) on demand

    m = Machine(image, cmdline=cmdline, echo=echo)
    result = m.boot(max_insns=max_insns)
    if result.reason == "boot":
        remaining = None if max_insns is None else max_insns - result.insns
        if remaining is None or remaining > 0:
            result = m.run(max_insns=remaining)
        else:
            result.reason = "limit"
    return m, result


def compare(image=None, cmdline="", echo=None, timeout=DEFAULT_TIMEOUT, max_insns=None,
            qemu=QEMU):
    """Boot `image` with `cmdline` in kpemu, then under QEMU icount, and compare the console
    bytes, the exit codes and the tick counts.  `echo` gets kpemu's console as it is
    printed.  Raises QemuNotFound before running anything when QEMU is not installed."""
    if qemu_binary(qemu) is None:
        raise QemuNotFound(f"{qemu} not installed (not found on PATH): cannot run "
                           "the image under QEMU")
    if image is None:
        image = default_image()
    m, result = run_kpemu(image, cmdline, echo, max_insns)
    kc = bytes(m.uart.output)
    q = run_qemu(image, cmdline, first_line=first_line_of(kc), timeout=timeout, qemu=qemu)
    kexit = m.exit_code if result.reason == "halt" else None
    diff = first_difference(kc, q.console)
    try:
        final_jiffies = m.read_u64("jiffies")
    except EmuError:
        final_jiffies = None
    return Comparison(
        cmdline=cmdline,
        identical=diff is None and kexit == q.exit_code and kexit is not None,
        kpemu_console=kc, qemu_console=q.console,
        kpemu_exit=kexit, qemu_exit=q.exit_code, qemu_status=q.status,
        kpemu_reason=result.reason,
        line=diff[0] if diff else None,
        kpemu_line=diff[1] if diff else None,
        qemu_line=diff[2] if diff else None,
        kpemu_jiffies=parse_jiffies(kc), qemu_jiffies=parse_jiffies(q.console),
        kpemu_pit_ticks=m.pit.ticks, kpemu_irqs=m.irqs, kpemu_final_jiffies=final_jiffies,
        kpemu_insns=m.clock.now, kpemu_executed=m.clock.executed, kpemu_idle=m.clock.idle,
        tsc_delta=parse_tsc_delta(kc),
        oops=m.oops.format() if result.reason == "oops" and m.oops is not None else None,
        firmware=q.firmware, qemu_argv=q.argv, qemu_timed_out=q.timed_out,
        qemu_timeout=q.timeout)
