"""The kprobe command layer, after Linux's kernel/trace/trace_kprobe.c.

This module owns:
  * the kprobe_events command: a `p`/`r` line parsed into a ProbeDefinition (probe
    point, maxactive, event name, arguments -- __trace_kprobe_create() up to
    registration), a `-:` line into a DeleteCommand, a write split into its lines;
  * what registration reports in the probe-event language: the multi-probe append checks
    and the error a failed register_kprobe() leaves in error_log;
  * the events: kprobe_events commands turned into real kprobes and kretprobes on the
    machine, per-event enable/disable, the kprobe_events read-back, kprobe_profile, the
    trace buffer and the error_log, and what happens at a hit (TraceKprobe._hit, the
    reference; where the arch can record a hit natively -- arch.native_event(), trap.c's
    EventProbe -- its raw record is read back here as a TraceRecord);
  * events on modules (trace_kprobe_module_callback()): a `MOD:SYM` event whose module is
    not loaded is defined all the same and registered when the module comes; when it goes,
    its probes go [GONE] (kprobes' own notifier) and the event stays, to be registered
    again on the new text when the module is loaded again.

The fetch arguments and types are trace_probe's, the error catalogue is errors', the text
of a trace line trace_output's.  This module sits on top of the three and is the only one
of the package that registers probes.
Must not import: unicorn; kprobes.core, kprobes.kretprobe or kprobes.arch directly (Kprobe,
KprobeError and Kretprobe come from the package top level, wherever those classes live).
"""

import errno as _errno
from dataclasses import dataclass

from emu import MemoryFault
from emu.modules import MODULE_STATE_COMING
from emu.tasks import read_comm_pid
from kprobes import KRETPROBE_MAXACTIVE_MAX, Kprobe, KprobeError, Kretprobe
from kprobes.events.errors import ErrorCode, LogError, ProbeCommandError, ProbeSyntaxError
from kprobes.events.ring_buffer import (BUF_PAGE_SIZE, DEFAULT_BUFFER_SIZE_KB, RingBuffer,
                                        event_size)
from kprobes.events.trace_output import (
    TraceRecord,
    format_probe_ip,
    format_retprobe_ip,
    irq_flags,
    trace_header,
)
from kprobes.events.trace_probe import (
    KERNEL_FETCH_FLOOR,
    MAX_ARGSTR_LEN,
    MAX_EVENT_NAME_LEN,
    MAX_TRACE_ARGS,
    THREAD_SIZE,
    UINT_MAX,
    check_var_args,
    compare_arg_type,
    count_entry_args,
    isdigit,
    kernel_argument,
    kstrtouint,
    kstrtoul,
    lookup_symbol,
    parse_event_name,
    parse_probe_arg,
    sanitize_event_name,
    set_print_fmt,
    split_symbol_offset,
    store_trace_args,
)

KPROBE_EVENT_SYSTEM = "kprobes"     # the default group


# -- the kprobe_events command --------------------------------------------------------------------

def _argv_split(line):
    """argv_split(): words separated by C whitespace; no quoting."""
    return line.split()


def split_commands(text):
    """The lines a kprobe_events write runs, like trace_parse_run_command(): each line up to
    its first '#', blank lines dropped."""
    out = []
    for line in text.split("\n"):
        line = line.split("#", 1)[0]
        if line.strip():
            out.append(line)
    return out


@dataclass
class ProbeDefinition:
    """A parsed `p`/`r` kprobe_events line.

    `symbol` (with any `MOD:` prefix) and `offset` for a symbol probe, `addr` for an address
    probe; `kind` is "r" for `r...` and for `p ...%return`.  `argv` and `command` are the
    words and the command as Linux rebuilds them for error carets.
    """

    kind: str
    group: str
    event: str
    symbol: str
    offset: int
    addr: int
    maxactive: int
    args: list
    argv: tuple
    on_func_entry: bool = False     # TPARG_FL_FENTRY: $argN reads the argument registers
    event_generated: bool = False
    thread_size: int = THREAD_SIZE

    @property
    def is_return(self):
        return self.kind == "r"

    @property
    def module(self):
        """MOD of a `MOD:SYM[+OFFS]` probe point, else None."""
        if self.symbol is None or ":" not in self.symbol:
            return None
        return self.symbol.split(":", 1)[0]

    @property
    def command(self):
        return " ".join(self.argv)

    @property
    def probe_point(self):
        """The place as kprobe_events prints it: `SYM`, `SYM+OFFS` or `0x<addr>`.

        Linux prints the address with %p, which hashes it unless no_hash_pointers; kpemu
        prints the real address, 16 hex digits like an unhashed %p."""
        if self.symbol is None:
            return f"0x{self.addr:016x}"
        if self.offset:
            return f"{self.symbol}+{self.offset}"
        return self.symbol

    def canonical(self):
        """The kprobe_events read-back line (trace_kprobe_show())."""
        head = self.kind
        if self.is_return and self.maxactive:
            head += str(self.maxactive)
        parts = [f"{head}:{self.group}/{self.event}", self.probe_point]
        parts += [a.text for a in self.args]
        return " ".join(parts)

    @property
    def entry_arg_count(self):
        """How many entry arguments a return probe needs saved at entry (0 for none)."""
        return count_entry_args(self.args)

    def capture_entry_args(self, ctx):
        """What the kretprobe entry handler saves (store_trace_entry_data()): the values of
        $arg1..$argK at entry, for ctx.entry_args at return."""
        return [kernel_argument(ctx, n, self.thread_size) for n in range(self.entry_arg_count)]

    def resolve(self, symbols):
        """The probed address (symbol + offset, or the address), None if the symbol is
        unknown."""
        if self.symbol is None:
            return self.addr
        base = lookup_symbol(symbols, self.symbol)
        return None if base is None else base + self.offset

    def error(self, err, index, offset=0, errno=_errno.EINVAL):
        """A ProbeSyntaxError on argv[index] of this command."""
        return ProbeSyntaxError.at(err, self.argv, index, offset, errno)

    def compile(self, symbols):
        """Resolve every `@SYM[+|-off]` (traceprobe_update_arg()); errors are reported as
        registration errors on the probe point.  Returns self."""
        for a in self.args:
            try:
                a.update(symbols)
            except ProbeCommandError as e:
                raise registration_error(self, e.errno) from None
        return self

    def fetch_args(self, ctx):
        """Every argument's value at this hit (what Linux stores in the ring buffer)."""
        return store_trace_args(self.args, ctx)

    def record_size(self, values):
        """The ring-buffer size of a record with these fetched `values`: the entry
        header, the probe's ip (and a return probe's func), then each argument's payload."""
        return 8 + (16 if self.is_return else 8) + sum(
            a.payload_size(v) for a, v in zip(self.args, values))

    def print_fmt(self):
        """The event's print_fmt (__set_print_fmt())."""
        return set_print_fmt(self.args, self.is_return)


@dataclass(frozen=True)
class DeleteCommand:
    """`-:[GROUP/]EVENT [PLACE [ARGS...]]`: `event` "" with a group removes the whole group;
    `match_args` narrows the match to probes with that place and leading arguments."""

    group: str
    event: str
    match_args: tuple = ()

    def matches(self, defn):
        """trace_kprobe_match() with trace_kprobe_match_command_head()."""
        if self.event and defn.event != self.event:
            return False
        if self.group is not None and defn.group != self.group:
            return False
        if not self.match_args:
            return True
        if defn.probe_point[:MAX_ARGSTR_LEN] != self.match_args[0]:
            return False
        rest = self.match_args[1:]
        if len(defn.args) < len(rest):
            return False
        return all(a.text[:MAX_ARGSTR_LEN] == w for a, w in zip(defn.args, rest))


def parse_command(text, symbols=None, *, thread_size=THREAD_SIZE):
    """Parse one kprobe_events line.

    Returns a ProbeDefinition for `p`/`r`, a DeleteCommand for `-:`, or None for a line that
    is blank after its comment is removed.  Raises ProbeSyntaxError (with Linux's error_log
    entry) or ProbeCommandError (errno only).  With `symbols` (kallsyms) the probed symbol
    must exist once and `@SYM` arguments are resolved; without it only syntax is checked.
    """
    line = text.split("#", 1)[0]
    argv = _argv_split(line)
    if not argv:
        return None
    if line[0] == "-":
        return _parse_delete(argv)
    return _parse_probe(tuple(argv), symbols, thread_size)


def _parse_delete(argv):
    """dyn_event_release()'s parse: errno only, no error_log."""
    head = argv[0]
    if head[1:2] != ":":
        raise ProbeCommandError(_errno.EINVAL, f"bad delete command {head!r}")
    event = head[2:]
    group = None
    if "/" in event:
        group, event = event.split("/", 1)
    if group is None and event == "":
        raise ProbeCommandError(_errno.EINVAL, "no event to delete")
    return DeleteCommand(group, event, tuple(argv[1:]))


def _parse_probe(argv, symbols, thread_size):
    """trace_kprobe_create_internal(), up to (not including) registration."""

    def fail(err, index, offset=0, errno=_errno.EINVAL):
        raise ProbeSyntaxError.at(err, argv, index, offset, errno)

    head = argv[0]
    if head[0] not in "pr":
        raise ProbeCommandError(_errno.EINVAL, f"unknown probe type {head[0]!r}")
    is_return = head[0] == "r"
    if len(argv) < 2:
        raise ProbeCommandError(_errno.EINVAL, "no probe point")

    colon = head.find(":", 1)
    event_text = head[colon + 1:] if colon >= 0 else None

    # 1. r[MAXACTIVE]
    maxactive = 0
    if isdigit(head[1:2]):
        if not is_return:
            fail(ErrorCode.BAD_MAXACT_TYPE, 0, 1)
        num = head[1:colon] if colon >= 0 else head[1:]
        if len(num) > MAX_EVENT_NAME_LEN - 1:
            fail(ErrorCode.BAD_MAXACT, 0, 1)
        maxactive = kstrtouint(num, 0)
        if not maxactive:
            fail(ErrorCode.BAD_MAXACT, 0, 1)
        if maxactive > KRETPROBE_MAXACTIVE_MAX:
            fail(ErrorCode.MAXACT_TOO_BIG, 0, 1)

    # 2. the place: an address, else [MOD:]SYM[+OFFS][%return]
    addr = kstrtoul(argv[1], 0)
    symbol, offset = None, 0
    ret_flag = on_entry = False
    if addr is None:
        place = argv[1]
        if "/" in place and ":" in place:
            raise ProbeCommandError(_errno.EINVAL, "a uprobe, not a kprobe")
        symbol = place
        pct = symbol.find("%")
        if pct >= 0:
            if symbol[pct:] != "%return":
                fail(ErrorCode.BAD_ADDR_SUFFIX, 1, pct)
            symbol = symbol[:pct]
            is_return = True
        symbol, offset = split_symbol_offset(symbol)
        if offset is None or offset < 0 or offset > UINT_MAX:
            fail(ErrorCode.BAD_PROBE_ADDR, 1)
        known = True
        if symbols is not None:
            n = _count_symbols(symbols, symbol)
            if n is not None and n > 1:
                fail(ErrorCode.NON_UNIQ_SYMBOL, 1)
            if n == 0:
                fail(ErrorCode.BAD_PROBE_ADDR, 1)
            known = n is not None
        # Linux sets TPARG_FL_RETURN only for symbol probes, so `r ADDR $retval` is refused
        # with RETVAL_ON_PROBE and `$argN` there with NOFENTRY_ARGS; kept as Linux has it.
        ret_flag = is_return
        # kprobe_on_func_entry(): a known symbol at offset 0 (x86 without IBT).
        if known and offset == 0 and not is_return:
            on_entry = True
        if known and offset != 0 and is_return:
            fail(ErrorCode.BAD_RETPROBE, 1)

    # 3. [GROUP/][EVENT]
    group, event = KPROBE_EVENT_SYSTEM, None
    if event_text is not None:
        group, event = parse_event_name(event_text, colon + 1, group, fail)
    generated = event is None
    if generated:
        if symbol is not None:
            name = f"{'r' if is_return else 'p'}_{symbol}_{offset}"
        else:
            name = f"{'r' if is_return else 'p'}_0x{addr:016x}"
        event = sanitize_event_name(name[:MAX_EVENT_NAME_LEN - 1])

    # 4. the arguments
    words = argv[2:]
    check_var_args(words, on_entry or ret_flag, fail)
    if len(words) > MAX_TRACE_ARGS:
        fail(ErrorCode.TOO_MANY_ARGS, 2, 0, _errno.E2BIG)
    args, size = [], 0
    for i, word in enumerate(words):
        try:
            a, size = parse_probe_arg(word, i, args, ret_flag, on_entry, thread_size, size)
        except LogError as e:
            fail(e.err, i + 2, e.offset, e.errno)
        args.append(a)

    defn = ProbeDefinition(kind="r" if is_return else "p", group=group, event=event,
                           symbol=symbol, offset=offset,
                           addr=addr if symbol is None else None, maxactive=maxactive,
                           args=args, argv=argv, on_func_entry=on_entry,
                           event_generated=generated, thread_size=thread_size)
    if symbols is not None:
        defn.compile(symbols)
    return defn


def _count_symbols(symbols, name):
    """number_of_same_symbols() for validate_probe_symbol(); None when `MOD:` names a module
    that is not loaded (Linux defers such probes)."""
    if ":" in name:
        mod, sym = name.split(":", 1)
        in_mod = [s for s in symbols if getattr(s, "module", None) == mod]
        if not in_mod:
            return None
        return sum(1 for s in in_mod if s.name == sym)
    return sum(1 for s in symbols if s.name == name)


# -- what registration reports in this language ---------------------------------------------------

def registration_error(defn, errno):
    """The error a failed registration leaves in error_log, caret on the probe point
    (__trace_kprobe_create after register_trace_kprobe()): EILSEQ is BAD_INSN_BNDRY, ENOENT
    BAD_PROBE_ADDR, anything else but ENOMEM/EEXIST FAIL_REG_PROBE.  ENOMEM and EEXIST log
    nothing here (EEXIST has logged its own reason) and come back as a bare
    ProbeCommandError."""
    err = {_errno.EILSEQ: ErrorCode.BAD_INSN_BNDRY,
           _errno.ENOENT: ErrorCode.BAD_PROBE_ADDR}.get(errno, ErrorCode.FAIL_REG_PROBE)
    if errno in (_errno.ENOMEM, _errno.EEXIST):
        return ProbeCommandError(errno)
    return defn.error(err, 1, 0, errno)


def check_append(existing, new):
    """register_trace_kprobe()'s checks when `new` names an event that already has the
    probes `existing` (a multi-probe event): raises DIFF_PROBE_TYPE, DIFF_ARG_TYPE or
    SAME_PROBE as Linux does, else returns.

    Like Linux, an address probe counts as symbol "unknown" at offset 0 in the sameness
    test, so two address probes with the same arguments are "the same probe"."""
    if not existing:
        return
    first = existing[0]
    if new.is_return != first.is_return:
        raise new.error(ErrorCode.DIFF_PROBE_TYPE, 0, 0, _errno.EEXIST)
    diff = compare_arg_type(new, first)
    if diff:
        raise new.error(ErrorCode.DIFF_ARG_TYPE, diff + 1, 0, _errno.EEXIST)
    for old in existing:
        if ((old.symbol or "unknown") != (new.symbol or "unknown")
                or old.offset != new.offset):
            continue
        if all(x.comm == y.comm for x, y in zip(old.args, new.args)):
            raise new.error(ErrorCode.SAME_PROBE, 0, 0, _errno.EEXIST)


# -- the events -----------------------------------------------------------------------------------

# The flag columns of a hit by (need-resched, preempt count): kprobe handlers always
# run with interrupts off, so these are the only inputs.
_FLAGS = {}


class _Ctx:
    """What a fetch argument reads at a hit: registers, memory, symbols, comm, and for a
    return probe the return value and the arguments saved at entry."""

    __slots__ = ("regs", "m", "symbols", "retval", "entry_args", "_comm", "_kernel_floor")

    def __init__(self, m, regs, retval=None, entry_args=None):
        self.m = m
        self.regs = regs
        self.symbols = m.symbols
        self.retval = retval
        self.entry_args = entry_args
        self._comm = None
        # x86_64's copy_from_kernel_nofault_allowed(): on a guest with a user space
        # (Linux), a kernel fetch (+N(), string) of a user address faults without being
        # read -- user memory is read only by +uN() and ustring, as Linux does.
        self._kernel_floor = KERNEL_FETCH_FLOOR if m.layout.has_user_space else 0

    def read(self, addr, size):
        if addr < self._kernel_floor:
            raise MemoryFault(addr)
        return self.m.mem.read(addr, size)

    def read_user(self, addr, size):
        """A user fetch, through the current task's page tables (the host's walk)."""
        return self.m.mem.read(addr, size)

    @property
    def comm(self):
        if self._comm is None:
            try:
                task = self.m.current
                self._comm = task.comm if task else ""
            except MemoryFault:
                self._comm = ""
        return self._comm


class TraceKprobe:
    """One probe point of an event (an event may have several: multi-probe)."""

    def __init__(self, events, event, defn):
        self.events = events
        self.event = event
        self.defn = defn
        self._nhit = 0
        self.recorder = None          # the C path's EventProbe, when it can record a hit
        m = events.m
        if defn.is_return:
            count = defn.entry_arg_count
            self.probe = Kretprobe(addr=defn.addr if defn.symbol is None else None,
                                   symbol_name=defn.symbol, offset=defn.offset,
                                   handler=self._return_hit,
                                   entry_handler=self._entry if count else None,
                                   data_size=8 * count, maxactive=defn.maxactive or 0)
            self.kprobe = self.probe.kp
        self.m = m
        self._ip_text = None          # (probe address, its place as the trace prints it)
        # The ring-buffer size of a record when no argument is a string (whose size is its
        # value's), else None.
        self._payload = None if any(a.type.is_string for a in defn.args) else \
            defn.record_size([0] * len(defn.args))
        if not defn.is_return:
            self.probe = self.kprobe = Kprobe(
                addr=defn.addr if defn.symbol is None else None, symbol_name=defn.symbol,
                offset=defn.offset, pre_handler=self._pre_handler())

    def compiled(self):
        """The definition was compiled again (a module came: its `@SYM`s moved with its
        text): a kprobe event's native recorder is made anew for the new addresses, its
        hits carried over."""
        if not self.defn.is_return:
            hits = self.nhit
            self.recorder = None
            self.kprobe.pre_handler = self._pre_handler()
            self.nhit = hits

    def _pre_handler(self):
        """_hit, or the arch's native recorder standing for it (which calls _hit for
        whatever it does not do itself) when every argument has a native program, the
        record has a fixed size and `current` is the toykernel's."""
        defn, events = self.defn, self.events
        arch = getattr(events.k, "arch", None)
        if self._payload is None or events.m.guest is not None or \
                not hasattr(arch, "native_event") or \
                any(a.thread_size != events.thread_size for a in defn.args):
            return self._hit
        hit = self._hit
        native = arch.native_event(hit, [a.native_code() for a in defn.args],
                                   event=self.event, owner=self,
                                   **events.record_layout(self._payload))
        if native is not hit:
            self.recorder = native
        return native

    @property
    def nhit(self):
        """kprobe_profile's hits (kept by the recorder when there is one)."""
        return self._nhit if self.recorder is None else self.recorder.nhit

    @nhit.setter
    def nhit(self, value):
        if self.recorder is None:
            self._nhit = value
        else:
            self.recorder.nhit = value

    def placed(self):
        """The probe was registered at kprobe.addr: the recorder's records print the place
        as _hit() prints it, formatted now, while the text there is the probe's."""
        if self.recorder is not None:
            addr = self.kprobe.addr
            self.recorder.place = (addr, format_probe_ip(self.m.symbols, addr))

    def trace_record(self, raw):
        """The TraceRecord of a hit the C path recorded (`raw`, trap.c's RawRecord): made
        when the buffer is read, formatted only when it is printed."""
        return TraceRecord(raw.comm, raw.pid,
                           self.events.flags_of(raw.need_resched, raw.preempt_count),
                           raw.clock, self.event.event, raw.ip_text, self.defn.args,
                           raw.values, self.m.symbols)

    @property
    def nmissed(self):
        """kprobe_profile's misses: the kprobe's, plus the kretprobe's for return events."""
        if self.defn.is_return:
            return self.probe.kp.nmissed + self.probe.nmissed
        return self.kprobe.nmissed

    def miss_causes(self):
        if self.defn.is_return:
            return self.probe.miss_report()
        return dict(self.kprobe.misses)

    # -- hits ---------------------------------------------------------------------------

    def _record(self, regs, ip_text, ctx):
        """Take what a record needs at the hit -- the arguments' raw values, comm, pid,
        flags, clock -- and nothing formatted (TraceRecord formats when it is read)."""
        self.nhit += 1
        if not self.event.enabled:
            return
        defn = self.defn
        values = defn.fetch_args(ctx)
        events = self.events
        comm, pid = events.current_comm_pid()
        rec = TraceRecord(comm, pid, events.flags_now(regs), self.m.clock.now,
                          self.event.event, ip_text, defn.args, values, self.m.symbols)
        # The record as Linux's ring buffer holds it: trace_entry (8 bytes), the probe's
        # ip (a return probe's func and ret_ip), then the fields.
        payload = self._payload
        if payload is None:
            payload = defn.record_size(values)
        events.append(rec, payload)

    def _hit(self, p, regs):
        # The place a kprobe event prints is its probe's: formatted once per address.
        if self._ip_text is None or self._ip_text[0] != p.addr:
            self._ip_text = (p.addr, format_probe_ip(self.m.symbols, p.addr))
        self._record(regs, self._ip_text[1], _Ctx(self.m, regs))
        return 0

    def _entry(self, ri, regs):
        args = self.defn.capture_entry_args(_Ctx(self.m, regs))
        for i, value in enumerate(args):
            ri.data[8 * i:8 * i + 8] = (value & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "little")
        return 0

    def _return_hit(self, ri, regs):
        count = self.defn.entry_arg_count
        entry = [int.from_bytes(ri.data[8 * i:8 * i + 8], "little") for i in range(count)]
        ctx = _Ctx(self.m, regs, retval=regs.ax, entry_args=entry)
        where = format_retprobe_ip(self.m.symbols, ri.ret_addr, self.probe.addr,
                                   self.events.tramp)
        self._record(regs, where, ctx)


def _read_record(rec):
    """A ring-buffer record as a reader gets it: a TraceRecord (a RawRecord of the C path
    becomes one now)."""
    return rec if isinstance(rec, TraceRecord) else rec.owner.trace_record(rec)


class TraceEvent:
    """GROUP/EVENT: its probes, its enable switch."""

    def __init__(self, group, event):
        self.group = group
        self.event = event
        self.probes = []
        self.enabled = False

    @property
    def name(self):
        return f"{self.group}/{self.event}"

    @property
    def nhit(self):
        return sum(tp.nhit for tp in self.probes)

    @property
    def nmissed(self):
        return sum(tp.nmissed for tp in self.probes)


class KprobeEvents:
    """The tracefs files of kprobe events for one Kprobes: kprobe_events (write(),
    listing()), events/GROUP/EVENT/enable (enable()/disable()), kprobe_profile
    (profile()), trace (trace_lines()), error_log."""

    def __init__(self, k, buffer_size_kb=DEFAULT_BUFFER_SIZE_KB):
        self.k = k
        self.m = k.m
        self.events = {}              # "group/event" -> TraceEvent, in creation order
        # the one CPU's; a record the C path wrote (a RawRecord) is read as a TraceRecord
        self.buffer = RingBuffer(buffer_size_kb, read=_read_record)
        self.listeners = []           # fn(TraceRecord) as each is written (trace_pipe)
        self.error_log = []
        self.tramp = self.m.symbols.lookup_name("kretprobe_trampoline")
        layout = self.m.layout
        consts = self.m.image.constants
        self._ti_flags = consts.get("TI_flags")
        self._need_resched = consts.get("TIF_NEED_RESCHED")
        self._ti_preempt = consts.get("TI_preempt_count")
        self.thread_size = layout.thread_size
        # What Linux pr_warn()s to the kernel log about events: a probe deferred until its
        # module is loaded, a probe that could not be registered again on a module's text.
        self.log = []
        self.m.add_module_notifier(self.module_callback)

    # -- kprobe_events ----------------------------------------------------------------

    def write(self, text, append=True):
        """Like `echo TEXT >> kprobe_events` (or `>` with append=False, which first clears
        every event and is refused with EBUSY while any is enabled).  Each line is one
        command; the first bad one raises (ProbeSyntaxError carries the error_log entry)
        and the lines before it stay done, as the kernel does."""
        if not append:
            self.clear()
        for line in split_commands(text):
            self.command(line)

    def command(self, line):
        try:
            defn = parse_command(line, self.m.symbols, thread_size=self.thread_size)
        except ProbeSyntaxError as err:
            self.error_log.append(err.format())
            raise
        if defn is None:
            return None
        if isinstance(defn, DeleteCommand):
            return self._delete(defn)
        return self._create(defn)

    def _create(self, defn):
        name = f"{defn.group}/{defn.event}"
        event = self.events.get(name)
        existing = [tp.defn for tp in event.probes] if event else []
        try:
            check_append(existing, defn)
            defn.compile(self.m.symbols)
        except ProbeSyntaxError as err:
            self.error_log.append(err.format())
            raise
        tp = TraceKprobe(self, event or TraceEvent(defn.group, defn.event), defn)
        try:
            self._register(tp)
        except KprobeError as exc:
            if exc.errno != _errno.ENOENT or self._module_loaded(defn):
                err = registration_error(defn, exc.errno)
                if getattr(err, "err", None) in (None, ErrorCode.FAIL_REG_PROBE):
                    err.reason = str(exc)        # the log says only that it failed
                if isinstance(err, ProbeSyntaxError):
                    self.error_log.append(err.format())
                raise err from None
            # register_trace_kprobe(): ENOENT for a `MOD:SYM` whose module is not loaded
            # defers the probe to the module's coming.
            self.log.append(f"{name}: This probe might be able to register after target "
                            "module is loaded. Continue.")
        if event is None:
            self.events[name] = tp.event
        tp.event.probes.append(tp)
        return tp

    def _register(self, tp):
        """__register_trace_kprobe(): register tp's probe, disabled unless its event is
        enabled (a new probe of an event follows the event's switch, never armed even for
        a moment otherwise)."""
        tp.kprobe.disabled = not tp.event.enabled
        if tp.defn.is_return:
            self.k.register_kretprobe(tp.probe)
        else:
            self.k.register_kprobe(tp.probe)
            tp.placed()

    def _unregister(self, tp):
        if tp.defn.is_return:
            self.k.unregister_kretprobe(tp.probe)
        else:
            self.k.unregister_kprobe(tp.probe)

    def _module_loaded(self, defn):
        """trace_kprobe_module_exist(): the module a `MOD:SYM` names is loaded (always
        true for a kernel symbol or an address)."""
        mod = defn.module
        return mod is None or any(x.name == mod for x in self.m.loaded_modules())

    def module_callback(self, state, mod):
        """The module notifier (trace_kprobe_module_callback()): when `mod` comes, every
        probe placed `MOD:SYM` in it -- deferred, or [GONE] with an earlier load -- is
        unregistered (a gone probe writes nothing) and registered on the new text,
        resolving its `@SYM` arguments again; one that fails stays unregistered, with
        Linux's warning in `log`.  Leaving is kprobes' notifier's business."""
        if state != MODULE_STATE_COMING:
            return
        for event in self.events.values():
            for tp in event.probes:
                if tp.defn.module != mod.name:
                    continue
                self._unregister(tp)
                try:
                    tp.defn.compile(self.m.symbols)
                    tp.compiled()
                    self._register(tp)
                except (KprobeError, ProbeCommandError) as exc:
                    self.log.append(f"Failed to re-register probe {event.event} on "
                                    f"{mod.name}: {-exc.errno}")

    def _delete(self, cmd):
        """dyn_event_release(): every probe the command matches goes, one at a time,
        like unregister_trace_kprobe() -- a probe with siblings on its event just goes
        (so `-:GRP/EVENT PLACE` removes that probe of a multi-probe event, even an enabled
        one); the last probe of an event takes the event with it, and is refused with
        EBUSY while the event is enabled, which stops the command there."""
        victims = [tp for e in self.events.values() for tp in e.probes
                   if cmd.matches(tp.defn)]
        if not victims:
            raise ProbeCommandError(_errno.ENOENT, f"no event matches -:{cmd.group}/"
                                    f"{cmd.event}")
        for tp in victims:
            event = tp.event
            if len(event.probes) == 1 and event.enabled:
                raise ProbeCommandError(_errno.EBUSY, f"{event.name} is enabled")
            self._remove_probe(tp)

    def _remove_probe(self, tp):
        self._unregister(tp)
        event = tp.event
        event.probes.remove(tp)
        if not event.probes:
            del self.events[event.name]

    def _remove(self, event):
        for tp in list(event.probes):
            self._remove_probe(tp)

    def clear(self):
        """`> kprobe_events`: refused while any event is enabled (EBUSY)."""
        busy = [e.name for e in self.events.values() if e.enabled]
        if busy:
            raise ProbeCommandError(_errno.EBUSY, "cannot clear kprobe_events while "
                                    f"{', '.join(busy)} is enabled")
        for event in list(self.events.values()):
            self._remove(event)

    def listing(self):
        """The kprobe_events read-back, one canonical line per probe."""
        return "".join(tp.defn.canonical() + "\n" for e in self.events.values()
                       for tp in e.probes)

    # -- enable -----------------------------------------------------------------------

    def _select(self, name):
        if name is None:
            return list(self.events.values())
        found = [e for e in self.events.values()
                 if name in (e.name, e.event, e.group)]
        if not found:
            raise ProbeCommandError(_errno.ENOENT, f"no event {name!r}")
        return found

    def enable(self, name=None):
        """Like `echo 1 > events/.../enable`: the event's registered probes are armed; a
        deferred or [GONE] one is left as it is (__enable_trace_kprobe()) and follows the
        switch when its module comes."""
        for event in self._select(name):
            event.enabled = True
            for tp in event.probes:
                if tp.kprobe.registered and not tp.kprobe.gone:
                    self.k.enable_kprobe(tp.kprobe)

    def disable(self, name=None):
        for event in self._select(name):
            event.enabled = False
            for tp in event.probes:
                if tp.kprobe.registered:
                    self.k.disable_kprobe(tp.kprobe)

    # -- trace, profile ---------------------------------------------------------------

    def append(self, record, payload):
        """Write one record (`payload` bytes of data) into the ring buffer and hand it to
        the listeners."""
        self.buffer.write(record, payload)
        for listener in self.listeners:
            listener(record)

    def current_comm_pid(self):
        """(comm, pid) of the guest's current task for a record, ("<idle>", 0) when there
        is none or it cannot be read."""
        try:
            addr = self.m.current_addr
            return read_comm_pid(self.m.mem, self.m.layout, addr) if addr else ("<idle>", 0)
        except MemoryFault:
            return "<idle>", 0

    def record_layout(self, payload):
        """What a native recorder of a record of `payload` bytes needs to know of this
        buffer and of the guest (the arch's native_event() keywords): the ring buffer's
        sizes, where comm and pid are in a task, where flags_now() reads its inputs."""
        layout = self.m.layout
        return {"buffer": self.buffer, "listeners": self.listeners,
                "record_size": event_size(payload), "page_size": BUF_PAGE_SIZE,
                "comm_off": layout.comm, "comm_len": layout.comm_len,
                "pid_off": layout.pid, "thread_size": self.thread_size,
                "ti_flags": -1 if self._ti_flags is None or self._need_resched is None
                else self._ti_flags,
                "ti_preempt": -1 if self._ti_preempt is None else self._ti_preempt,
                "need_resched_bit": self._need_resched or 0}

    def flags_now(self, regs):
        """The five flag columns at a hit: kprobe handlers run with interrupts off (int3
        and #DB are interrupt gates), need-resched from the task's thread_info flags, the
        preempt count."""
        need = False
        preempt = 0
        if self._ti_flags is not None:
            ti = regs.sp & ~(self.thread_size - 1)
            try:
                need = bool(self.m.mem.u64(ti + self._ti_flags) >> self._need_resched & 1)
                if self._ti_preempt is not None:
                    preempt = self.m.mem.u32(ti + self._ti_preempt)
            except MemoryFault:
                pass
        return self.flags_of(need, preempt)

    @staticmethod
    def flags_of(need, preempt):
        """The five flag columns for need-resched `need` and preempt count `preempt`."""
        flags = _FLAGS.get((need, preempt))
        if flags is None:
            flags = _FLAGS[need, preempt] = irq_flags(irqs_off=True, need_resched=need,
                                                      preempt_count=preempt)
        return flags

    def trace_lines(self):
        return [r.text() for r in self.buffer]

    def trace(self):
        """The `trace` file: its header and the lines."""
        buf = self.buffer
        return "\n".join(trace_header(buf.entries, buf.written) + self.trace_lines()) + "\n"

    def profile(self):
        """kprobe_profile: `  EVENT(44) HITS(15) MISSES(15)` per event."""
        return "".join(f"  {e.event:<44} {e.nhit:>15} {e.nmissed:>15}\n"
                       for e in self.events.values())

    def miss_causes(self, event):
        causes = {}
        for tp in event.probes:
            for cause, n in tp.miss_causes().items():
                causes[cause] = causes.get(cause, 0) + n
        return {c: n for c, n in causes.items() if n}
