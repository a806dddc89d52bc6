"""The `kpemu` command line (also `python -m kprobes`).

    kpemu boot [IMAGE] [-e DEF]... [--events-file F] [--format text|json]
               [--cmdline TEXT] [--initrd FILE] [--max-insns N] [--compare-qemu]
    kpemu events --check DEF [--check DEF]... [--image IMAGE]
    kpemu symbols [PATTERN] [--image IMAGE] [--module FILE.o]...
    kpemu disasm SYMBOL [--image IMAGE]
    kpemu list [-e DEF]... [--module F.o]... [--available | --blacklist] [--image IMAGE]

Bad input (a missing or malformed image, an unknown symbol, a bad option) prints one line
naming the problem and exits 2 (a bad probe definition prints the kernel's error_log
entry: the message, the command, a caret under the offending character); a guest oops
prints the report and exits 3; a run cut off by --max-insns exits 4; otherwise the exit status is the guest's (the value it wrote to
isa-debug-exit).  With --compare-qemu the status is 0 when QEMU icount printed the same
bytes and exit code (for Linux: or every line that differs has a known cause, listed), 1
when it did not, 2 when qemu-system-x86_64 is not installed.  A
reader closing the output pipe (`kpemu boot | head`) ends kpemu quietly with 141, the status
of a tool killed by SIGPIPE.  A traceback appears only with --debug.
"""

import argparse
import fnmatch
import gc
import json
import os
import signal
import sys

from capstone import CS_ARCH_X86, CS_MODE_64, Cs

from emu import KpemuError, Machine
from emu.machine import DEFAULT_IMAGE
from emu.qemu import compare
from kprobes import Kprobes, KprobesError
from kprobes.demos import command as demo_command
from kprobes.events import KprobeEvents, ProbeCommandError, ProbeSyntaxError
from kprobes.events.ring_buffer import DEFAULT_BUFFER_SIZE_KB

EXIT_BAD_INPUT = 2
EXIT_OOPS = 3
EXIT_LIMIT = 4
EXIT_INTERRUPTED = 128 + signal.SIGINT    # what a shell reports for Ctrl-C
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
    boot.add_argument("--cmdline", default=None, help="kernel command line, e.g. "
                      "'hz=20000' (default: the image's: none for toykernel, the `cmdline` "
                      "file beside a Linux image)")
    boot.add_argument("--initrd", default=None, metavar="FILE",
                      help="a Linux guest's initramfs (default: initramfs.cpio beside the "
                      "image)")
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
    boot.add_argument("--stream", action="store_true",
                      help="print each trace record as it is written, while the guest "
                      "runs (like reading trace_pipe); the console is then echoed a whole "
                      "line at a time")
    boot.add_argument("--buffer-size-kb", type=_positive, default=DEFAULT_BUFFER_SIZE_KB,
                      metavar="KB", help="the trace ring buffer's size, as ftrace's "
                      f"buffer_size_kb (default {DEFAULT_BUFFER_SIZE_KB}); when full the "
                      "oldest records are overwritten and counted as lost")
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
    syms.add_argument("--module", action="append", default=[], metavar="FILE.o",
                      help="list this module's symbols instead, at the addresses it loads "
                      "at (loaded in order, as `boot --module` loads them); repeatable")

    lst = sub.add_parser("list", parents=[common], help="what kprobes sees: the probes "
                         "registered (kprobes/list), what can be probed, the blacklist")
    lst.add_argument("--image", default=None)
    lst.add_argument("--module", action="append", default=[], metavar="FILE.o",
                     help="load a module first (repeatable)")
    lst.add_argument("-e", "--event", action="append", default=[], metavar="DEF",
                     dest="events", help="register this probe definition first (repeatable)")
    what = lst.add_mutually_exclusive_group()
    what.add_argument("--available", action="store_true", help="the functions that can be "
                      "probed, like available_filter_functions")
    what.add_argument("--blacklist", action="store_true", help="kprobes/blacklist, with the "
                      "reason for each entry")

    dis = sub.add_parser("disasm", parents=[common], help="disassemble a function as it is in guest memory")
    dis.add_argument("symbol")
    dis.add_argument("--image", default=None)

    demo = sub.add_parser("demo", parents=[common], help="teaching demos: a recorded lesson "
                          "narrated trap by trap (no NAME: list them)")
    demo_command.add_arguments(demo)
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


def _attach(m, definitions, buffer_size_kb=DEFAULT_BUFFER_SIZE_KB):
    """Install kprobes and create every event (kprobe_events writes), still disabled:
    a bad definition fails here, before the guest prints anything."""
    events = KprobeEvents(Kprobes(m), buffer_size_kb)
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


class _LineEcho:
    """The console echoed a whole line at a time (with --stream, so a trace line never
    lands inside a console line)."""

    def __init__(self, out):
        self.out = out
        self.pending = b""

    def __call__(self, data):
        self.pending += data
        if b"\n" in self.pending:
            done, _, self.pending = self.pending.rpartition(b"\n")
            self.out.buffer.write(done + b"\n")
            self.out.flush()

    def close(self):
        if self.pending:
            self.out.buffer.write(self.pending)
            self.out.flush()
            self.pending = b""


def _json_line(out, obj):
    out.write(json.dumps(obj) + "\n")


def cmd_boot(args, out, err):
    if args.compare_qemu:
        return cmd_compare_qemu(args, out, err)
    definitions = _definitions(args)
    text = args.format == "text"
    echo = None
    if text and not args.quiet:
        echo = _LineEcho(out) if args.stream else \
            (lambda b: (out.buffer.write(b), out.flush()))
    m = Machine(args.image, cmdline=args.cmdline, echo=echo, initrd=args.initrd)
    for path in args.module:          # insmod first: events may probe module text
        m.load_module(path)
    events = _attach(m, definitions, args.buffer_size_kb) if definitions else None
    if events is not None and args.stream:
        events.listeners.append(
            (lambda rec: (out.write(rec.text() + "\n"), out.flush())) if text else
            (lambda rec: (_json_line(out, {"type": "trace", **rec.as_json()}), out.flush())))
    interrupted = None
    try:
        result = m.boot(max_insns=args.max_insns)
        if result.reason == "boot":
            if events is not None:
                events.enable()           # attached once the kernel is up, as on Linux
            remaining = None if args.max_insns is None else args.max_insns - result.insns
            if remaining is None or remaining > 0:
                result = m.run(max_insns=remaining)
            else:
                result.reason = "limit"
    except KeyboardInterrupt as exc:      # Ctrl-C: the guest stopped cleanly; report it all
        interrupted = exc
    if isinstance(echo, _LineEcho):
        echo.close()
    if events is not None:
        _print_trace(events, m, text, args.stream, out)
    elif not text:
        _json_line(out, {"type": "console", "text": m.console})
    clock = m.clock
    if interrupted is not None:
        err.write(f"{interrupted.args[0] if interrupted.args else 'kpemu: interrupted'}; "
                  f"clock {clock.now}\n")
        return EXIT_INTERRUPTED
    if result.reason == "halt":
        err.write(f"kpemu: powered off with exit code {m.exit_code}: "
                  f"{clock.executed} instructions executed, clock {clock.now} "
                  f"({clock.idle} idle in hlt), {m.pit.ticks} timer ticks\n")
        return m.exit_code
    if result.reason == "oops":
        err.write(m.oops.format() + "\n")
        return EXIT_OOPS
    err.write(f"kpemu: stopped after {clock.executed} instructions (--max-insns); guest at "
              f"{m.symbols.format(m.engine.reg('ip'))}, clock {clock.now}\n")
    return EXIT_LIMIT


def _print_trace(events, m, text, streamed, out):
    """After the run: the trace (unless it was streamed), kprobe_profile, and what the
    ring buffer lost."""
    buf = events.buffer
    if text:
        if not streamed:
            out.write(events.trace())
        out.write(_profile_text(events))
        return
    _json_line(out, {"type": "console", "text": m.console})
    if not streamed:
        for rec in buf:
            _json_line(out, {"type": "trace", **rec.as_json()})
    for e in events.events.values():
        _json_line(out, {"type": "profile", "event": e.name, "hits": e.nhit,
                         "misses": e.nmissed, "causes": events.miss_causes(e)})
    _json_line(out, {"type": "buffer", "size_kb": buf.size_kb, "entries": buf.entries,
                     "written": buf.written, "overrun": buf.overrun})


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
    of the same image and command line (emu/qemu.py, docs/qemu.md).  Options that only
    kpemu could honour (probes, modules, a JSON or streamed trace) are refused."""
    unsupported = [flag for flag, used in (
        ("-e/--event", args.events), ("--events-file", args.events_file),
        ("--module", args.module), ("--format json", args.format != "text"),
        ("--stream", args.stream),
        ("--buffer-size-kb", args.buffer_size_kb != DEFAULT_BUFFER_SIZE_KB)) if used]
    if unsupported:
        raise UsageError(f"--compare-qemu compares the unprobed image with QEMU and cannot "
                         f"take {', '.join(unsupported)}")
    echo = None if args.quiet else (lambda b: (out.buffer.write(b), out.flush()))
    c = compare(args.image, args.cmdline, echo=echo, max_insns=args.max_insns,
                initrd=args.initrd)
    if c.oops:
        err.write(c.oops + "\n")
    if c.agrees and not c.identical:
        out.write(f"kpemu: QEMU icount agrees, exit code {c.kpemu_exit}, but for "
                  f"{len(c.differences)} lines, each with a known cause (docs/qemu.md):\n")
        causes = {}
        for side, line, cause in c.differences:
            causes.setdefault(cause, []).append((side, line))
        for cause, lines in causes.items():
            out.write(f"  {cause}:\n")
            for side, line in lines:
                out.write(f"    {side + ':':<6} {_show(line.encode('latin-1'))}\n")
        return 0
    if c.unexplained:
        out.write(f"kpemu: QEMU differs in {len(c.unexplained)} lines with no known cause "
                  f"(of {len(c.differences)} differing):\n")
        for side, line, _cause in c.unexplained:
            out.write(f"  {side + ':':<6} {_show(line.encode('latin-1'))}\n")
        return 1
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
    """The kernel's kallsyms entries matching PATTERN or, with --module, the modules':
    each is loaded (not initialised: nothing runs) into a fresh machine in the order given,
    as `kpemu boot --module` loads them, so the addresses are the ones a boot uses."""
    m = Machine(args.image)
    if args.module:
        names = [m.load_module(path).name for path in args.module]
        found = [s for name in names for s in m.symbols.module_symbols(name)
                 if fnmatch.fnmatchcase(s.name, args.pattern)]
    else:
        found = m.symbols.match(args.pattern)
    if not found:
        where = f" in {', '.join(args.module)}" if args.module else ""
        raise UsageError(f"no symbol matches {args.pattern!r}{where}")
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


def cmd_list(args, out, err):
    """kpemu list: kprobes/list after the definitions are registered (the kprobes
    subsystem's own trampoline probe included, as 2.6.13 registered it), or
    --available / --blacklist."""
    m = Machine(args.image)
    for path in args.module:
        m.load_module(path)
    events = _attach(m, args.events)
    k = events.k
    if args.available:
        for name, module in k.available_functions():
            out.write(f"{name} [{module}]\n" if module else f"{name}\n")
    elif args.blacklist:
        for start, end, name, why in k.blacklist():
            out.write(f"0x{start:016x}-0x{end:016x}\t{name}\t({why})\n")
    else:
        out.write(k.list())
    return 0


COMMANDS = {"boot": cmd_boot, "events": cmd_events, "symbols": cmd_symbols,
            "disasm": cmd_disasm, "list": cmd_list, "demo": demo_command.cmd_demo}


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
        if exc.reason:
            err.write(f"kpemu: {exc.reason}\n")
        return EXIT_BAD_INPUT
    except ProbeCommandError as exc:
        if debug:
            raise
        err.write(f"kpemu: {exc}\n")
        if exc.reason:
            err.write(f"kpemu: {exc.reason}\n")
        return EXIT_BAD_INPUT
    except KpemuError as exc:         # the machine's, kprobes' (one error root)
        if debug:
            raise
        err.write(f"kpemu: {exc}\n")
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        err.write("kpemu: interrupted\n")
        return EXIT_INTERRUPTED


def console_main():
    """The `kpemu` command (and `python -m kprobes`): main(), and then the objects the run
    made are left to the exit.  Python's last act would be a collection that traces every
    one of them -- a tenth of a second after a Linux boot -- to free memory the process
    gives back anyway; frozen (gc.freeze) they are not traced.  Atexit handlers and
    reference-counted finalizers run as before."""
    status = main()
    gc.freeze()
    return status


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
    sys.exit(console_main())
