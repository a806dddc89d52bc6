"""The `kpemu` command line (also `python -m kprobes`).

    kpemu boot [IMAGE] [-e DEF]... [--events-file F] [--format text|json]
               [--cmdline TEXT] [--max-insns N] [--compare-qemu]
    kpemu events --check DEF [--check DEF]... [--image IMAGE]
    kpemu symbols [PATTERN] [--image IMAGE]
    kpemu disasm SYMBOL [--image IMAGE]

Bad input (a missing or malformed image, an unknown symbol, a bad option) prints one line
naming the problem and exits 2 (a bad probe definition prints the kernel's error_log
entry: the message, the command, a caret under the offending character); a guest oops
prints the report and exits 3; a run cut off by --max-insns exits 4; otherwise the exit status is the guest's (the value it wrote to
isa-debug-exit).  With --compare-qemu the status is 0 when QEMU icount printed the same
bytes and exit code, 1 when it did not, 2 when qemu-system-x86_64 is not installed.  A
reader closing the output pipe (`kpemu boot | head`) ends kpemu quietly with 141, the status
of a tool killed by SIGPIPE.  A traceback appears only with --debug.
"""

import argparse
import json
import os
import signal
import sys

from capstone import CS_ARCH_X86, CS_MODE_64, Cs

from emu import EmuError, Machine
from emu.machine import DEFAULT_IMAGE
from emu.qemu import compare
from kprobes import Kprobes, KprobesError
from kprobes.events import KprobeEvents, ProbeCommandError, ProbeSyntaxError

EXIT_BAD_INPUT = 2
EXIT_OOPS = 3
EXIT_LIMIT = 4
# What a shell reports for a tool killed by SIGPIPE (`kpemu boot | head`).
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def build_parser():
    p = _Parser(prog="kpemu", description="A full-system x86_64 emulator with Linux kprobes "
                "built in: boots a real compiled kernel in Unicorn.")
    common = _Parser(add_help=False)
    common.add_argument("--debug", action="store_true",
                        help="show Python tracebacks on errors")
    p.add_argument("--debug", action="store_true", help="show Python tracebacks on errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    boot = sub.add_parser("boot", parents=[common], help="boot an image and run it to power-off, printing "
                          "its console")
    boot.add_argument("image", nargs="?", default=None,
                      help=f"kernel image (default: {DEFAULT_IMAGE.name} of toykernel)")
    boot.add_argument("--cmdline", default="", help="kernel command line, e.g. 'hz=20000'")
    boot.add_argument("--max-insns", type=_positive, default=None, metavar="N",
                      help="stop after N guest instructions (exit status 4)")
    boot.add_argument("--quiet", action="store_true",
                      help="print only kpemu's summary, not the console")
    boot.add_argument("--module", action="append", default=[], metavar="FILE.o",
                      help="load a relocatable module (like insmod) before the run; "
                      "repeatable")
    boot.add_argument("-e", "--event", action="append", default=[], metavar="DEF",
                      dest="events", help="attach a probe, in the kprobe_events language "
                      "(e.g. 'p:myprobe do_fork arg=%%di' or 'r:ret sys_mkdir $retval'); "
                      "repeatable")
    boot.add_argument("--events-file", metavar="F", help="probe definitions, one per line "
                      "(# comments)")
    boot.add_argument("--format", choices=("text", "json"), default="text",
                      help="text: console, then the ftrace-style trace and kprobe_profile; "
                      "json: one JSON object per line (console, trace records, profile)")
    boot.add_argument("--compare-qemu", action="store_true",
                      help="also boot the image under QEMU icount and compare the console "
                      "bytes, exit code and ticks (exit 0 identical, 1 different, 2 no QEMU)")

    evs = sub.add_parser("events", parents=[common], help="check probe definitions against "
                         "an image without running it; prints their kprobe_events read-back")
    evs.add_argument("--check", action="append", default=[], metavar="DEF", required=True,
                     help="a definition to check (repeatable)")
    evs.add_argument("--image", default=None)

    syms = sub.add_parser("symbols", parents=[common], help="list kallsyms entries (address, type, name, "
                          "size) matching a shell pattern")
    syms.add_argument("pattern", nargs="?", default="*")
    syms.add_argument("--image", default=None)

    dis = sub.add_parser("disasm", parents=[common], help="disassemble a function as it is in guest memory")
    dis.add_argument("symbol")
    dis.add_argument("--image", default=None)
    return p


def _positive(text):
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


class EventsFileError(KprobesError):
    """An --events-file that cannot be read as probe definitions: not found, a directory,
    larger than EVENTS_FILE_MAX, not UTF-8 text, a NUL byte, a line Linux would refuse."""


# Linux's kprobe_events takes a write of any length, but parses it in WRITE_BUFSIZE (4096)
# pieces and refuses a line of WRITE_BUFSIZE - 2 bytes or more (trace_parse_run_command()).
# A file is bounded too, so /dev/zero or a runaway generator ends at once: 1 MiB is some
# ten thousand definitions, far more probes than a run can carry.
EVENTS_FILE_MAX = 1 << 20
EVENTS_LINE_MAX = 4096 - 2


def read_events_file(path):
    """The lines of a probe-definitions file, as `for line in open(path)` gives them, or
    EventsFileError.  Any readable file works, a pipe too (`--events-file <(...)`), but at
    most EVENTS_FILE_MAX bytes are read: an endless stream fails at once, never hangs."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise EventsFileError(f"{path}: {exc.strerror}") from None
    try:
        # O_NONBLOCK only so that opening a FIFO with no writer returns; reads then block
        # for data as `cat` would (a FIFO nobody writes to reads as empty).
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(EVENTS_FILE_MAX + 1)
    except IsADirectoryError:
        raise EventsFileError(f"{path}: is a directory, not a file of probe "
                              "definitions") from None
    except OSError as exc:
        raise EventsFileError(f"{path}: cannot read: {exc.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > EVENTS_FILE_MAX:
        raise EventsFileError(f"{path}: more than the {EVENTS_FILE_MAX >> 20} MiB kpemu reads "
                              "from an events file")
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise EventsFileError(f"{path}: UTF-16 text (it starts with a byte-order mark); "
                              "probe definitions are ASCII or UTF-8")
    lines = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    out = []
    for number, raw in enumerate(lines, 1):
        if b"\0" in raw:
            raise EventsFileError(f"{path}: line {number} has a NUL byte at column "
                                  f"{raw.index(0) + 1}: a binary file, or UTF-16 text?")
        if len(raw) >= EVENTS_LINE_MAX:
            raise EventsFileError(f"{path}: line {number} is {len(raw)} bytes long; like "
                                  f"Linux, kpemu takes lines shorter than {EVENTS_LINE_MAX}")
        try:
            out.append(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise EventsFileError(f"{path}: line {number} is not UTF-8 text (byte "
                                  f"{raw[exc.start]:#04x} at column {exc.start + 1})") from None
    return out


def _definitions(args):
    lines = list(args.events)
    if args.events_file:
        lines += read_events_file(args.events_file)
    return [ln for ln in lines if ln.split("#", 1)[0].strip()]


def _attach(m, definitions):
    """Install kprobes and create every event (kprobe_events writes), still disabled:
    a bad definition fails here, before the guest prints anything."""
    events = KprobeEvents(Kprobes(m))
    for line in definitions:
        events.command(line)
    return events


MISS_CAUSES = {
    "maxactive": "no free instance (raise MAXACTIVE: r<N>:...)",
    "reentered": "hit while kprobes was already busy (in a handler)",
    "entry_handler": "entry handler declined",
    "disabled": "probe disabled",
    "orphaned": "returned after the probe was removed",
}


def _profile_text(events):
    lines = ["# kprobe_profile", events.profile().rstrip("\n")]
    explained = []
    for e in events.events.values():
        causes = events.miss_causes(e)
        if causes:
            why = ", ".join(f"{n} {MISS_CAUSES.get(c, c)}" for c, n in sorted(causes.items()))
            explained.append(f"#   {e.event}: {e.nmissed} missed: {why}")
    lines.append("# misses: " + ("none" if not explained else "explained below"))
    return "\n".join(lines + explained) + "\n"


def cmd_boot(args, out, err):
    if args.compare_qemu:
        return cmd_compare_qemu(args, out, err)
    definitions = _definitions(args)
    text = args.format == "text"
    echo = None if args.quiet or not text else (lambda b: (out.buffer.write(b), out.flush()))
    m = Machine(args.image, cmdline=args.cmdline, echo=echo)
    for path in args.module:          # insmod first: events may probe module text
        m.load_module(path)
    events = _attach(m, definitions) if definitions else None
    boot = m.boot(max_insns=args.max_insns)
    result = boot
    if boot.reason == "boot":
        if events is not None:
            events.enable()           # attached once the kernel is up, as on Linux
        remaining = None if args.max_insns is None else args.max_insns - boot.insns
        result = m.run(max_insns=remaining) if remaining is None or remaining > 0 else boot
        if remaining is not None and remaining <= 0:
            result.reason = "limit"
    if events is not None:
        _print_trace(events, m, text, out)
    elif not text:
        out.write(json.dumps({"type": "console", "text": m.console}) + "\n")
    total = m.clock.now
    ticks = m.pit.ticks
    if result.reason == "halt":
        err.write(f"kpemu: powered off with exit code {m.exit_code}: "
                  f"{m.clock.executed} instructions executed, clock {total} "
                  f"({m.clock.idle} idle in hlt), {ticks} timer ticks\n")
        return m.exit_code
    if result.reason == "oops":
        err.write(m.oops.format() + "\n")
        return EXIT_OOPS
    err.write(f"kpemu: stopped after {total} instructions (--max-insns); guest at "
              f"{m.symbols.format(m.engine.reg('ip'))}\n")
    return EXIT_LIMIT


def _print_trace(events, m, text, out):
    if text:
        out.write(events.trace())
        out.write(_profile_text(events))
        return
    out.write(json.dumps({"type": "console", "text": m.console}) + "\n")
    for rec in events.buffer:
        out.write(json.dumps({"type": "trace", **rec.as_json()}) + "\n")
    for e in events.events.values():
        out.write(json.dumps({"type": "profile", "event": e.name, "hits": e.nhit,
                              "misses": e.nmissed, "causes": events.miss_causes(e)}) + "\n")


def cmd_events(args, out, err):
    """kpemu events --check DEF: parse, resolve and register against the image (never
    run): the read-back on success, the error_log entry and exit 2 on the first error."""
    m = Machine(args.image)
    events = _attach(m, args.check)
    out.write(events.listing())
    return 0


def _show(line):
    if line is None:
        return "<end of output>"
    text = line.decode("latin-1")
    text = text[:-1] if text.endswith("\n") else text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _qemu_end(c):
    if c.qemu_timed_out:
        return f"did not power off within {c.qemu_timeout:g} s (killed)"
    return f"exit status {c.qemu_status}"


def cmd_compare_qemu(args, out, err):
    """kpemu boot --compare-qemu: kpemu's console, then one verdict on QEMU icount's run
    of the same image and command line (emu/qemu.py, docs/qemu.md)."""
    echo = None if args.quiet else (lambda b: (out.buffer.write(b), out.flush()))
    c = compare(args.image, args.cmdline, echo=echo, max_insns=args.max_insns)
    if c.oops:
        err.write(c.oops + "\n")
    if c.identical:
        ticks = c.kpemu_jiffies if c.kpemu_jiffies is not None else c.kpemu_pit_ticks
        out.write(f"kpemu: QEMU icount agrees: {c.nbytes} bytes, {c.nlines} lines identical, "
                  f"exit code {c.kpemu_exit}, ticks {ticks}\n")
        return 0
    if c.line is not None:
        out.write(f"kpemu: QEMU differs at line {c.line}:\n"
                  f"  kpemu: {_show(c.kpemu_line)}\n"
                  f"  qemu:  {_show(c.qemu_line)}\n")
    else:
        def code(value, what):
            return f"exit code {value}" if value is not None else what
        out.write(f"kpemu: QEMU differs at the end ({c.nbytes} bytes identical):\n"
                  f"  kpemu: {code(c.kpemu_exit, 'did not power off (' + c.kpemu_reason + ')')}\n"
                  f"  qemu:  {code(c.qemu_exit, _qemu_end(c))}\n")
    return 1


def cmd_symbols(args, out, err):
    m = Machine(args.image)
    found = m.symbols.match(args.pattern)
    if not found:
        raise UsageError(f"no symbol matches {args.pattern!r}")
    for s in found:
        mod = f" [{s.module}]" if s.module else ""
        out.write(f"{s.addr:016x} {s.kind} {s.name} {s.size:#x}{mod}\n")
    return 0


def cmd_disasm(args, out, err):
    m = Machine(args.image)
    sym = m.symbols.get(args.symbol)
    if sym is None:
        raise UsageError(f"no symbol {args.symbol!r} in {m.image.path}")
    code = m.read(sym.addr, sym.size)
    cs = Cs(CS_ARCH_X86, CS_MODE_64)
    out.write(f"{sym.addr:016x} <{sym.name}> ({sym.size:#x} bytes):\n")
    for insn in cs.disasm(code, sym.addr):
        raw = insn.bytes.hex(" ")
        out.write(f"  {sym.name}+{insn.address - sym.addr:#x}  {insn.address:x}:  "
                  f"{raw:<30} {insn.mnemonic} {insn.op_str}\n".rstrip() + "\n")
    return 0


COMMANDS = {"boot": cmd_boot, "events": cmd_events, "symbols": cmd_symbols,
            "disasm": cmd_disasm}


def main(argv=None, out=None, err=None):
    out = out or sys.stdout
    err = err or sys.stderr
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    try:
        args = build_parser().parse_args(argv)
        status = COMMANDS[args.command](args, out, err)
        out.flush()                   # a closed pipe shows here, not at interpreter exit
        return status
    except BrokenPipeError:
        if debug:
            raise
        # The reader went away (`kpemu boot | head`): stop quietly, as a Unix tool killed
        # by SIGPIPE does.  Python's docs (signal, "Note on SIGPIPE"): point the closed
        # stream at /dev/null, or the interpreter's last flush raises once more.
        _discard_output(out, err)
        return EXIT_BROKEN_PIPE
    except EventsFileError as exc:
        if debug:
            raise
        err.write(f"kpemu: {exc}\n")
        return EXIT_BAD_INPUT
    except UsageError as exc:
        if debug:
            raise
        err.write(f"kpemu: {exc}\n")
        return EXIT_BAD_INPUT
    except ProbeSyntaxError as exc:
        if debug:
            raise
        err.write(exc.format() + "\n")          # the error_log entry, caret and all
        return EXIT_BAD_INPUT
    except ProbeCommandError as exc:
        if debug:
            raise
        err.write(f"kpemu: {exc}\n")
        return EXIT_BAD_INPUT
    except EmuError as exc:
        if debug:
            raise
        err.write(f"kpemu: {exc}\n")
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        err.write("kpemu: interrupted\n")
        return 130


def _discard_output(*streams):
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        for stream in streams:
            try:
                fd = stream.fileno()
            except (AttributeError, OSError, ValueError):
                continue              # not a file (a test's StringIO): nothing to flush later
            os.dup2(devnull, fd)
    finally:
        os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
