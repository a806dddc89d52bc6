"""The kprobe command layer (like Linux's kernel/trace/trace_kprobe.c): kprobe_events
commands turned into real kprobes and kretprobes on the machine, per-event
enable/disable, the kprobe_events read-back, kprobe_profile, the trace buffer and the
error_log.

The language itself (parsing, fetch args, types) is trace_probe.py, the error catalogue
errors.py, the text of a trace line trace_output.py; this module owns the events and what
happens at a hit.
"""

import errno as _errno

from emu import MemoryFault
from kprobes.core import Kprobe, KprobeError
from kprobes.events.errors import ProbeCommandError, ProbeSyntaxError
from kprobes.events.trace_output import (
    TraceRecord,
    format_probe_ip,
    format_retprobe_ip,
    irq_flags,
    trace_header,
)
from kprobes.events.trace_probe import (
    DeleteCommand,
    check_append,
    parse_command,
    registration_error,
    split_commands,
)
from kprobes.kretprobe import Kretprobe


class _Ctx:
    """What a fetch argument reads at a hit: registers, memory, symbols, comm, and for a
    return probe the return value and the arguments saved at entry."""

    __slots__ = ("regs", "m", "symbols", "retval", "entry_args", "_comm")

    def __init__(self, m, regs, retval=None, entry_args=None):
        self.m = m
        self.regs = regs
        self.symbols = m.symbols
        self.retval = retval
        self.entry_args = entry_args
        self._comm = None

    def read(self, addr, size):
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
        self.nhit = 0
        m = events.m
        if defn.is_return:
            count = defn.entry_arg_count
            self.probe = Kretprobe(addr=defn.addr if defn.symbol is None else None,
                                   symbol_name=defn.symbol, offset=defn.offset,
                                   handler=self._return_hit,
                                   entry_handler=self._entry if count else None,
                                   data_size=8 * count, maxactive=defn.maxactive or 0)
            self.kprobe = self.probe.kp
        else:
            self.probe = self.kprobe = Kprobe(
                addr=defn.addr if defn.symbol is None else None, symbol_name=defn.symbol,
                offset=defn.offset, pre_handler=self._hit)
        self.m = m

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
        self.nhit += 1
        if not self.event.enabled:
            return
        m = self.m
        defn = self.defn
        values = defn.fetch_args(ctx)
        task = None
        try:
            task = m.current
        except MemoryFault:
            pass
        rec = TraceRecord(
            comm=task.comm if task else "<idle>", pid=task.pid if task else 0,
            flags=self.events.flags_now(regs), clock=m.clock.now,
            event=self.event.event, ip_text=ip_text,
            args_text=defn.format_values(values, m.symbols),
            values={a.name: a.format_value(v, m.symbols) for a, v in zip(defn.args, values)})
        self.events.append(rec)

    def _hit(self, p, regs):
        self._record(regs, format_probe_ip(self.m.symbols, p.addr), _Ctx(self.m, regs))
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

    def __init__(self, k):
        self.k = k
        self.m = k.m
        self.events = {}              # "group/event" -> TraceEvent, in creation order
        self.buffer = []
        self.error_log = []
        self.tramp = self.m.symbols.lookup_name("kretprobe_trampoline")
        layout = self.m.layout
        consts = self.m.image.constants
        self._ti_flags = consts.get("TI_flags")
        self._need_resched = consts.get("TIF_NEED_RESCHED")
        self._ti_preempt = consts.get("TI_preempt_count")
        self._thread_size = layout.thread_size

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
            defn = parse_command(line, self.m.symbols, thread_size=self._thread_size)
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
        if defn.symbol is not None and defn.resolve(self.m.symbols) is None:
            # A module symbol not loaded yet: Linux defers it; kpemu needs the module.
            err = registration_error(defn, _errno.ENOENT)
            self.error_log.append(err.format())
            raise err
        tp = TraceKprobe(self, event or TraceEvent(defn.group, defn.event), defn)
        try:
            if defn.is_return:
                self.k.register_kretprobe(tp.probe)
            else:
                self.k.register_kprobe(tp.probe)
        except KprobeError as exc:
            err = registration_error(defn, exc.errno)
            if isinstance(err, ProbeSyntaxError):
                self.error_log.append(err.format())
            raise err from None
        # A new probe of an event follows the event's switch.
        if not tp.event.enabled:
            self.k.disable_kprobe(tp.kprobe)
        if event is None:
            self.events[name] = tp.event
        tp.event.probes.append(tp)
        return tp

    def _delete(self, cmd):
        victims = [e for e in self.events.values()
                   if any(cmd.matches(tp.defn) for tp in e.probes)]
        if not victims:
            raise ProbeCommandError(_errno.ENOENT, f"no event matches -:{cmd.group}/"
                                    f"{cmd.event}")
        for event in victims:
            if event.enabled:
                raise ProbeCommandError(_errno.EBUSY, f"{event.name} is enabled")
        for event in victims:
            self._remove(event)

    def _remove(self, event):
        for tp in event.probes:
            if tp.defn.is_return:
                self.k.unregister_kretprobe(tp.probe)
            else:
                self.k.unregister_kprobe(tp.probe)
        del self.events[event.name]

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
        for event in self._select(name):
            event.enabled = True
            for tp in event.probes:
                self.k.enable_kprobe(tp.kprobe)

    def disable(self, name=None):
        for event in self._select(name):
            event.enabled = False
            for tp in event.probes:
                self.k.disable_kprobe(tp.kprobe)

    # -- trace, profile ---------------------------------------------------------------

    def append(self, record):
        self.buffer.append(record)

    def flags_now(self, regs):
        """The five flag columns at a hit: kprobe handlers run with interrupts off (int3
        and #DB are interrupt gates), need-resched from the task's thread_info flags, the
        preempt count."""
        need = False
        preempt = 0
        if self._ti_flags is not None:
            ti = regs.sp & ~(self._thread_size - 1)
            try:
                need = bool(self.m.mem.u64(ti + self._ti_flags) >> self._need_resched & 1)
                if self._ti_preempt is not None:
                    preempt = self.m.mem.u32(ti + self._ti_preempt)
            except MemoryFault:
                pass
        return irq_flags(irqs_off=True, need_resched=need, preempt_count=preempt)

    def trace_lines(self):
        return [r.text() for r in self.buffer]

    def trace(self):
        """The `trace` file: its header and the lines."""
        return "\n".join(trace_header(len(self.buffer)) + self.trace_lines()) + "\n"

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
