"""The same image under QEMU, on an instruction-count clock, and a byte-for-byte comparison
with kpemu (issue 3; docs/qemu.md).

QEMU runs with exactly the command line the README documents (a run with a budget adds
one QMP socket, below):

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
timed_out is set (a guest that never wakes from hlt does this under QEMU, unless the run has
a budget).

A budget of virtual time.  run_qemu(max_ns=N) stops QEMU once its virtual clock has passed
N ns, N instructions' worth of time under shift=0 (instructions executed plus the idle hlt
warps, what kpemu's clock counts; QEMU's clock also covers the firmware before the
kernel).  A guest idle in hlt still spends it: sleep=off warps the clock to each timer
deadline.  For that run only QEMU also gets a QMP socket (-qmp unix:...), which the harness
polls every POLL_INTERVAL: `query-replay` gives the instructions executed so far (QEMU's
raw icount, without the warps), and the ACPI PM timer, which QEMU counts on its virtual
clock at 3.579545 MHz (24 bits), gives the clock.  The timer's I/O port is found in
`info mtree -f` once the firmware has enabled it, and read with the HMP `i` command;
neither changes guest state.  Until then the instruction count stands in for the clock
(the clock is never behind it).  Once the clock has passed N the harness stops the VM (QMP
`stop`), reads both counters again and quits QEMU: budget_spent is set, status and
exit_code are None, virtual_ns and icount hold the counters at the stop.  The stop lands
up to one poll past N, so a guest still printing then may print a little more; a guest
that powers off first ends the run as usual; the wall-clock timeout still applies.

Must not import: unicorn, kprobes (compare() imports emu.machine only when called).
"""

import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from emu.errors import EmuError

QEMU = "qemu-system-x86_64"
DEFAULT_TIMEOUT = 300            # seconds of host time for one QEMU run
FIRMWARE_LAST_WORDS = b"Booting from ROM.."
SUMMARY_RE = re.compile(rb"jiffies (\d+)")
TSC_RE = re.compile(rb"tsc delta (\d+)")
PM_TIMER_HZ = 3579545            # the ACPI PM timer's rate; QEMU counts it on the virtual clock
PM_TIMER_BITS = 24
POLL_INTERVAL = 0.01             # seconds of host time between two readings of a budget run


class QemuNotFound(EmuError):
    """qemu-system-x86_64 is not on PATH."""


def qemu_binary(qemu=QEMU):
    """Path of the QEMU binary, or None when it is not installed."""
    return shutil.which(qemu)


# A Linux guest (emu/linux.py) runs on the CPU model closest to Unicorn's ("Intel Core
# Processor (Haswell)"), without the i8042 whose probe idles ~0.6 s of virtual time, with
# kpemu's 128 MiB spelt out, and its initramfs.
LINUX_MACHINE = ("-cpu", "Haswell", "-machine", "pc,i8042=off", "-m", "128M")


def qemu_argv(image, cmdline="", qemu=QEMU, linux=False, initrd=None):
    """The matching QEMU command line (argv) for `image` and `cmdline` (a Linux guest:
    LINUX_MACHINE, and `-initrd` when it has one)."""
    argv = [qemu, "-accel", "tcg", "-nographic", "-no-reboot", "-net", "none",
            "-icount", "shift=0,sleep=off",
            "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]
    if linux:
        argv += LINUX_MACHINE
        if initrd:
            argv += ["-initrd", os.fspath(initrd)]
    return argv + ["-kernel", os.fspath(image), "-append", cmdline]


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
    budget_spent: bool = False  # stopped at the max_ns budget of virtual time
    virtual_ns: int = None      # QEMU's virtual clock at that stop
    icount: int = None          # instructions QEMU had executed by then (no warps)

    def __iter__(self):
        return iter((self.console, self.exit_code, self.status))


def run_qemu(image=None, cmdline="", first_line=None, timeout=DEFAULT_TIMEOUT, qemu=QEMU,
             max_ns=None, linux=False, initrd=None):
    """Boot `image` (default: the toykernel) under QEMU icount and return a QemuRun.
    `first_line` is the kernel's first console line if known (see the module doc).  Raises
    QemuNotFound when QEMU is not installed; a QEMU still running after `timeout` seconds
    is killed and its output so far returned (timed_out=True).  With `max_ns`, QEMU is
    stopped once its virtual clock has passed that many ns (budget_spent=True; see the
    module doc)."""
    if image is None:
        image = default_image()
    binary = qemu_binary(qemu)
    if binary is None:
        raise QemuNotFound(f"{qemu} not installed (not found on PATH): cannot run "
                           "the image under QEMU")
    argv = qemu_argv(image, cmdline, qemu, linux=linux, initrd=initrd)
    if max_ns is not None:
        return _run_qemu_with_budget(binary, argv, first_line, timeout, max_ns)
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


class _QmpClosed(Exception):
    """QEMU closed its QMP socket: it has exited."""


class _Qmp:
    """A QMP client on a unix socket, one command at a time; events are skipped."""

    def __init__(self, sock, timeout):
        sock.settimeout(timeout)
        self.sock = sock
        self.file = sock.makefile("rwb")
        self._reply()                                   # the greeting
        self.command("qmp_capabilities")

    def _reply(self):
        while True:
            line = self.file.readline()
            if not line:
                raise _QmpClosed()
            reply = json.loads(line)
            if "event" not in reply:
                return reply

    def command(self, name, **arguments):
        message = {"execute": name}
        if arguments:
            message["arguments"] = arguments
        try:
            self.file.write(json.dumps(message).encode() + b"\n")
            self.file.flush()
            reply = self._reply()
        except TimeoutError:
            raise
        except OSError as exc:                          # reset or broken pipe: QEMU is gone
            raise _QmpClosed() from exc
        if "error" in reply:
            raise EmuError(f"QEMU's QMP refused {name}: {reply['error'].get('desc')}")
        return reply["return"]

    def hmp(self, line):
        return self.command("human-monitor-command", **{"command-line": line})

    def close(self):
        for f in (self.file, self.sock):
            try:
                f.close()
            except OSError:
                pass


def pm_timer_port(flatviews):
    """The ACPI PM timer's I/O port in an `info mtree -f` listing (the flat views: what is
    really mapped, at absolute addresses), or None while the firmware has not enabled it."""
    in_io = False
    for line in flatviews.splitlines():
        if line.startswith("FlatView"):
            in_io = False
        elif line.strip() == 'AS "I/O", root: io':
            in_io = True
        elif in_io:
            found = re.fullmatch(r"\s*([0-9a-f]+)-[0-9a-f]+ \(prio -?\d+, i/o\): acpi-tmr",
                                 line.rstrip())
            if found:
                return int(found.group(1), 16)
    return None


def unwrap_pm_timer(previous, raw, icount):
    """The PM timer's count since reset, from `raw`, its 24-bit reading now.  `previous`
    (the count at the last reading) and `icount` (instructions executed, 1 ns each) are
    floors: the count never goes back, and the clock is never behind the instructions."""
    span = 1 << PM_TIMER_BITS
    ticks = previous - previous % span + raw % span
    if ticks < previous:
        ticks += span                                   # wrapped since the last reading
    while ticks < icount * PM_TIMER_HZ // 10**9 - 1:
        ticks += span                                   # wrapped more than once
    return ticks


class _VirtualClock:
    """QEMU's virtual clock in ns, through the ACPI PM timer (see the module doc)."""

    def __init__(self, qmp):
        self.qmp = qmp
        self.port = None
        self.ticks = 0                                  # PM timer ticks, unwrapped

    def read(self, icount):
        """The clock now.  `icount`, the instructions executed (read just before), is its
        floor: it stands in while the PM timer is not enabled, and corrects the timer's
        coarser resolution."""
        if self.port is None:
            self.port = pm_timer_port(self.qmp.hmp("info mtree -f"))
            if self.port is None:
                return icount
        raw = int(self.qmp.hmp(f"i /w {self.port:#x}").rsplit("=", 1)[1], 16)
        self.ticks = unwrap_pm_timer(self.ticks, raw, icount)
        return max(self.ticks * 10**9 // PM_TIMER_HZ, icount)    # a tick is 279 ns


def _connect(path, proc, deadline):
    """A QMP connection to the QEMU `proc` at `path`; None if QEMU exited first."""
    while proc.poll() is None:
        if time.monotonic() > deadline:
            raise TimeoutError
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):   # not listening yet
            sock.close()
            time.sleep(0.001)
            continue
        return _Qmp(sock, max(deadline - time.monotonic(), 0.001))
    return None


def _spend_budget(qmp, max_ns, deadline):
    """Poll until QEMU's virtual clock has passed `max_ns`, then stop the VM and quit QEMU;
    returns (virtual_ns, icount) at the stop."""
    clock = _VirtualClock(qmp)
    while True:
        if time.monotonic() > deadline:
            raise TimeoutError
        icount = qmp.command("query-replay")["icount"]
        if clock.read(icount) >= max_ns:
            break
        time.sleep(POLL_INTERVAL)
    qmp.command("stop")
    icount = qmp.command("query-replay")["icount"]
    stopped_at = (clock.read(icount), icount)
    try:
        qmp.command("quit")
    except _QmpClosed:
        pass                                    # QEMU closed the socket as it quit
    return stopped_at


def _run_qemu_with_budget(binary, argv, first_line, timeout, max_ns):
    with tempfile.TemporaryDirectory(prefix="kpemu-qemu-") as tmp:
        path = os.path.join(tmp, "qmp.sock")
        out_path, err_path = os.path.join(tmp, "stdout"), os.path.join(tmp, "stderr")
        argv = list(argv) + ["-qmp", f"unix:{path},server=on,wait=off"]
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = subprocess.Popen([binary] + argv[1:], stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=err)
        deadline = time.monotonic() + timeout
        stopped_at = None                       # (virtual_ns, icount) at the stop
        timed_out = False
        qmp = None
        try:
            qmp = _connect(path, proc, deadline)
            if qmp is not None:
                stopped_at = _spend_budget(qmp, max_ns, deadline)
        except _QmpClosed:
            pass                                # the guest powered off (or QEMU failed)
        except TimeoutError:
            timed_out = True
        except BaseException:
            proc.kill()                         # an error of ours: leave no QEMU behind
            raise
        finally:
            if qmp is not None:
                qmp.close()
            if not timed_out and proc.poll() is None:     # exiting: powered off, or quit
                try:
                    proc.wait(timeout=max(deadline - time.monotonic(), 1.0))
                except subprocess.TimeoutExpired:
                    timed_out = True
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        with open(out_path, "rb") as out, open(err_path, "rb") as err:
            output, stderr = out.read(), err.read()
    firmware, console = split_firmware(output, first_line)
    if stopped_at is not None:
        return QemuRun(console, None, None, firmware, stderr, tuple(argv), timeout=timeout,
                       budget_spent=True, virtual_ns=stopped_at[0], icount=stopped_at[1])
    if timed_out:
        return QemuRun(console, None, None, firmware, stderr, tuple(argv),
                       timed_out=True, timeout=timeout)
    return QemuRun(console, decode_status(proc.returncode), proc.returncode, firmware,
                   stderr, tuple(argv), timeout=timeout)


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
    qemu_budget_spent: bool = False  # QEMU stopped at its qemu_max_ns budget of virtual time
    qemu_virtual_ns: int = None     # QEMU's virtual clock at that stop
    qemu_icount: int = None         # instructions QEMU had executed by then
    kind: str = "toykernel"         # the guest profile (Machine.kind)
    differences: list = None        # Linux: (side, line, cause or None) of each differing line

    @property
    def unexplained(self):
        """The differing lines no known cause explains (LINUX_DIFFERENCES)."""
        return [d for d in self.differences or () if d[2] is None]

    @property
    def agrees(self):
        """Identical, or (Linux) every differing line explained and the same exit code."""
        if self.identical:
            return True
        return (self.differences is not None and not self.unexplained and
                self.kpemu_exit is not None and self.kpemu_exit == self.qemu_exit)

    @property
    def nbytes(self):
        return len(self.kpemu_console)

    @property
    def nlines(self):
        return len(self.kpemu_console.splitlines())


def run_kpemu(image=None, cmdline="", echo=None, max_insns=None, initrd=None):
    """Boot `image` in kpemu to power-off; returns the Machine and the last RunResult."""
    from emu.machine import Machine    # imports unicorn (through emu.engine) on demand

    m = Machine(image, cmdline=cmdline, echo=echo, initrd=initrd)
    result = m.boot(max_insns=max_insns)
    if result.reason == "boot":
        remaining = None if max_insns is None else max_insns - result.insns
        if remaining is None or remaining > 0:
            result = m.run(max_insns=remaining)
        else:
            result.reason = "limit"
    return m, result


# Why a Linux guest's console still differs from QEMU's, line by line (docs/qemu.md says
# more): a pattern for the line, on either side, and its cause.
_NO_MPTABLE = ("QEMU's SeaBIOS builds an Intel MP table (with an I/O APIC) before the "
               "kernel starts; kpemu has no firmware and builds none")
_NO_AVX = ("Unicorn 2.1.4's CPU (QEMU 5.0's TCG) has no AVX state to offer XSAVE; QEMU "
           "7.2's Haswell model has")
LINUX_DIFFERENCES = [(re.compile(p), cause) for p, cause in (
    (r"^found SMP MP-table at ", _NO_MPTABLE),
    (r"^Intel MultiProcessor Specification ", _NO_MPTABLE),
    (r"^MPTABLE: ", _NO_MPTABLE),
    (r"^Processor #0 \(Bootup-CPU\)$", _NO_MPTABLE),
    (r"^IOAPIC\[0\]: ", _NO_MPTABLE),
    (r"^Processors: 1$", _NO_MPTABLE),
    (r"^No local APIC present$", _NO_MPTABLE + ", so Linux finds no local APIC"),
    (r"^APIC: (disable apic facility|switched to apic NOOP)$",
     _NO_MPTABLE + ", so Linux finds no local APIC"),
    (r"^NR_IRQS: \d+, nr_irqs: \d+, preallocated irqs: \d+$",
     _NO_MPTABLE + ": without its I/O APIC Linux sizes 24 IRQs, not 48"),
    (r"^x86/fpu: Supporting XSAVE feature 0x004: 'AVX registers'$", _NO_AVX),
    (r"^x86/fpu: xstate_offset\[2\]:", _NO_AVX),
    (r"^x86/fpu: Enabled xstate features 0x[37], context size is \d+ bytes", _NO_AVX),
    (r"^signal: max sigframe size: \d+$", _NO_AVX + ": the signal frame holds the state"),
    (r"^SRBDS: ", "kpemu's CPUID hides RDRAND (Unicorn's, like QEMU's, is host "
     "randomness: runs would differ), and Linux reports SRBDS only for CPUs that have it"),
    (r"^sched_clock: Marking stable \(", "nanosecond readings of the clock: QEMU's "
     "clock also ran SeaBIOS (~6 ms) and the instructions of the lines above"),
)]


def explain_differences(kpemu_console, qemu_console):
    """(side, line, cause) for each line in which the two consoles differ (difflib's
    alignment; side "kpemu" or "qemu"), cause None when LINUX_DIFFERENCES has none."""
    import difflib

    def lines(b):
        return b.decode("latin-1").replace("\r\n", "\n").split("\n")

    k, q = lines(kpemu_console), lines(qemu_console)
    out = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, k, q, autojunk=False).get_opcodes():
        if tag == "equal":
            continue
        for side, chunk in (("kpemu", k[i1:i2]), ("qemu", q[j1:j2])):
            for line in chunk:
                cause = next((c for pat, c in LINUX_DIFFERENCES if pat.search(line)), None)
                out.append((side, line, cause))
    return out


def compare(image=None, cmdline=None, echo=None, timeout=DEFAULT_TIMEOUT, max_insns=None,
            qemu=QEMU, qemu_max_ns=None, initrd=None):
    """Boot `image` with `cmdline` in kpemu, then under QEMU icount, and compare the console
    bytes, the exit codes and the tick counts.  `echo` gets kpemu's console as it is
    printed; `max_insns` is kpemu's budget and `qemu_max_ns` QEMU's (run_qemu's max_ns).
    Raises QemuNotFound before running anything when QEMU is not installed."""
    if qemu_binary(qemu) is None:
        raise QemuNotFound(f"{qemu} not installed (not found on PATH): cannot run "
                           "the image under QEMU")
    if image is None:
        image = default_image()
    m, result = run_kpemu(image, cmdline, echo, max_insns, initrd)
    cmdline = m.cmdline                # the image's default when None was given
    linux = m.kind == "linux"
    kc = bytes(m.uart.output)
    q = run_qemu(image, cmdline, first_line=first_line_of(kc), timeout=timeout, qemu=qemu,
                 max_ns=qemu_max_ns, linux=linux,
                 initrd=m.guest.initrd_path if linux else None)
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
        qemu_timeout=q.timeout, qemu_budget_spent=q.budget_spent,
        qemu_virtual_ns=q.virtual_ns, qemu_icount=q.icount, kind=m.kind,
        differences=explain_differences(kc, q.console) if linux and diff else
        ([] if linux else None))
