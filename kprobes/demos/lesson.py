"""The lesson trace: what a teaching demo records, and the recorder that records it.

A demo is a scenario run through the public API (Machine, Kprobes, Kprobe, Kretprobe).  A
Recorder attached to the machine's mechanism-event observers turns each event the lesson
cares about (a trap, a handler called, the single-step prepared, a fix-up, a byte armed,
the return address swapped, an instance taken or recycled, a miss) into a *step*, and
the demo adds steps of its own for the scenes between events.  Every step carries the
whole panel state -- code window, slot, registers, stack, kprobes state, trap counters --
so any renderer can show any step on its own, and going back is reading a list.  Plain
guest execution between two steps folds into one fast-forward step that says how many
instructions it covered.

Recording only reads: registers and memory through the machine, instructions decoded by
capstone on the host.  It never runs the guest, so it never moves the guest clock (the
observer demo checks that).

A step is a plain dict (JSON Lines with --json), built by Recorder.step():

    i, n            1-based index, number of steps (filled when the lesson is finished)
    design          "task" (b) or "stack" (a) for return-probe lessons, else None
    clock           the guest clock (instructions) at the step
    phase           the lesson's alignment key (e.g. "E.int3"), or None
    event           the mechanism event's kind ("kprobes.trap", ...) or "note"/"fastforward"
    vector, trap_no the trap's vector and its number in this lesson, for trap steps
    where           {ip, sym}
    title           a few words; narration: 1-3 sentences, filled in from facts
    facts           what the claims assert (numbers straight from the machine)
    regs, changed   every register; the names changed since the previous step
    flags           {TF, IF} decoded from regs.flags
    code, slot      instruction rows (see code_rows) of the watched function and of the
                    probe's instruction slot
    stack           slot rows around sp, symbolised, changed ones marked
    kprobes         {status, current, saved, nmissed, pools, bucket}
    counters        {int3, debug, slot_insns} so far in this lesson
    extra           an optional extra panel {title, lines}

Must not import: unicorn.
"""

import json
from dataclasses import dataclass, field

from capstone import CS_ARCH_X86, CS_MODE_64, Cs, CsError

from emu import MemoryFault
from emu.cpu import REG_NAMES, X86_EFLAGS_IF, X86_EFLAGS_TF
from emu.interrupts import vector_name
from kprobes.errors import KprobesError

SEMANTICS = "x86_64, Linux 2.6.13 semantics"
DESIGN_NAMES = {"task": "design (b), instances keyed by task",
                "stack": "design (a), instances keyed by stack address"}
DESIGN_LETTERS = {"task": "b", "stack": "a"}
VECTOR_LABELS = {1: "#DB", 3: "int3", 13: "#GP", 14: "#PF", 6: "#UD", 0: "#DE"}
DR6_BS = 1 << 14         # DR6's single-step bit
CODE_ROWS = 8            # instructions in the CODE window
STACK_ABOVE = 2          # stack slots shown below sp (already popped)
STACK_BELOW = 6          # slots from sp up
MAX_STEPS = 2000         # a lesson that records more has lost its way
SHOWN_REGS = ("ip", "sp", "flags")   # always in REGS; the rest only when changed

_cs = Cs(CS_ARCH_X86, CS_MODE_64)


class LessonError(KprobesError):
    """A demo that could not be recorded, or whose claims do not hold."""


def vector_label(vector):
    label = VECTOR_LABELS.get(vector)
    return f"{label} (vector {vector})" if label else f"{vector_name(vector)} (vector {vector})"


def disassemble(code, addr, count=None):
    """[(addr, size, bytes, text)] of the instructions in `code` at `addr`; a byte capstone
    cannot decode is shown as `(bad)` and skipped."""
    out = []
    offset = 0
    while offset < len(code) and (count is None or len(out) < count):
        try:
            insn = next(_cs.disasm(code[offset:offset + 15], addr + offset, 1), None)
        except CsError:
            insn = None
        if insn is None:
            out.append((addr + offset, 1, code[offset:offset + 1], "(bad)"))
            offset += 1
            continue
        text = f"{insn.mnemonic} {insn.op_str}".strip()
        out.append((insn.address, insn.size, bytes(insn.bytes), text))
        offset += insn.size
    return out


class Recorder:
    """Records a lesson on `m` (and `k`, its Kprobes, once installed).

    watch(fn):     the function shown in CODE (a symbol name)
    probe:         the probe whose slot SLOT shows (set by a register/trap event when None)
    narrators:     event kind -> fn(rec, event) returning (title, narration, phase, facts)
                   or None to leave the event out of the lesson; the defaults cover every
                   kprobes event, a demo overrides what it tells differently
    step(...):     add a step of the demo's own
    stack_labels:  stack address -> label (e.g. the exception frame's fields)
    """

    def __init__(self, m, k=None, design=None):
        self.m = m
        self.k = k
        self.design = design
        self.steps = []
        self.watched = None
        self.probe = None
        self.stack_labels = {}
        self.stack_notes = {}          # slot -> (old, new): a swapped return address
        self.narrators = dict(DEFAULT_NARRATORS)
        # fold: plain guest execution between two steps makes no fast-forward step of
        # its own; the next step can say how much ran (ran_since_step()).  For lessons
        # whose events come a few instructions apart (a recursion).
        self.fold = False
        self.folded = 0
        # address -> name, for addresses no symbol covers (m.call's return pad)
        self.labels = {m.call_return_address: "m.call return"}
        # probe -> the name a lesson gives it ("P1"), shown before its kind and place
        self.names = {}
        self.slot_insns = 0
        self.traps = 0
        self.attached = False
        self.stepping = False          # the single-step is prepared: one insn in the slot
        # Guest traps and interrupts (through the guest's IDT) the lesson narrates; the
        # rest fold into the fast-forward steps around them.
        self.guest_vectors = set()
        # With no kprobes installed, the int3s and #DBs the CPU took through the guest's
        # IDT are the lesson's trap counters (there is no kprobes per-CPU state to read).
        self._guest_traps = {"int3": 0, "debug": 0}
        self._pending_arm = None
        self._ending_trap = None
        self._unarmed = set()          # armed addresses a step shows as not yet armed
        self._decoded = (None, None)   # (the watched text, its instructions), decoded once
        self._tramp = m.symbols.lookup_name("kretprobe_trampoline")
        self._before_trap = False      # a fast-forward shows the CPU before its trap
        self._base = self._trap_counts()
        self._prev_regs = None
        self._prev_stack = {}
        self._prev_ip = None
        self._last_clock = m.clock.executed
        self._last_ip = m.engine.reg("ip")

    # -- attaching ----------------------------------------------------------------------

    def __enter__(self):
        self.attach()
        return self

    def __exit__(self, *exc):
        self.detach()

    def attach(self):
        if not self.attached:
            self.m.observers.append(self.on_event)
            self.attached = True
            self._last_clock = self.m.clock.executed

    def detach(self):
        if self.attached:
            self.m.observers.remove(self.on_event)
            self.attached = False

    def quiet(self, *kinds):
        """Leave these events out of the lesson: no step of their own (a folding lesson
        still counts their instructions).  A swap left out still notes the stack slot."""
        for kind in kinds:
            self.narrators[kind] = _note_swap if kind == "kprobes.swap" else _untold

    def watch(self, fn):
        addr = self.m.symbols.lookup_name(fn) if isinstance(fn, str) else fn
        if addr is None:
            raise LessonError(f"the lesson watches {fn!r}, which the image does not have")
        self.watched = self.m.symbols.symbol_at(addr)

    # -- events -------------------------------------------------------------------------

    def on_event(self, event):
        narrator = self.narrators.get(event.kind)
        if narrator is None:
            if event.kind in STEP_EVENTS:
                self._skipped(event)      # untold, but where the slot's run starts and ends
            return
        if event.kind in ("trap", "delivered", "irq") and \
                event.data.get("vector") not in self.guest_vectors:
            return
        if event.kind == "trap" and self.k is None and event.data["vector"] in GUEST_TRAPS:
            self._guest_traps[GUEST_TRAPS[event.data["vector"]]] += 1
        if event.kind == "kprobes.arm":
            # Registration arms before it reports: tell the copy first, then the byte.
            self._flush_arm()
            self._pending_arm = event
            return
        if event.kind == "kprobes.register" and self._pending_arm is not None and \
                self._pending_arm.data["addr"] == event.data["addr"]:
            self._unarmed = {event.data["addr"]}     # shown as before the arm step
            try:
                self._tell(narrator, event)
            finally:
                self._unarmed = set()
            self._flush_arm()
            return
        self._flush_arm()
        self._tell(narrator, event)

    def _flush_arm(self):
        event, self._pending_arm = self._pending_arm, None
        if event is not None:
            self._tell(self.narrators["kprobes.arm"], event)

    def _tell(self, narrator, event):
        told = narrator(self, event)
        if told is None:
            self._skipped(event)
            return
        title, narration, phase, facts = told
        vector = event.data.get("vector") if event.kind in TRAP_EVENTS else None
        at = event.data.get("ip") if event.kind in TRAP_EVENTS else None
        self._before_trap = event.kind == "kprobes.trap" and vector == 3 and \
            not event.data.get("reentered")
        try:
            self.step(title, narration, phase=phase, facts=facts, event=event.kind,
                      vector=vector, overrides=_overrides(event), at=at)
        finally:
            self._before_trap = False

    def _skipped(self, event):
        """An event a folding lesson leaves out still ends a stretch: what ran before it
        is counted (in the slot after a single-step was prepared, else as folded guest
        execution), so the counters of the next step stay exact."""
        if self.fold:
            self._fold_run()
            self.stepping = event.kind == "kprobes.singlestep"
            return
        # A lesson that does not fold: the slot's instruction is still the slot's.
        executed = self.m.clock.executed
        ran = executed - self._last_clock
        if event.kind == "kprobes.singlestep":
            if ran > 0:
                if self.stepping:
                    self.slot_insns += ran
                else:
                    self._fastforward(ran)
            self._last_clock = executed
            self.stepping = True
        elif self.stepping and (event.kind == "kprobes.fixup" or (
                event.kind == "kprobes.trap" and event.data.get("vector") == 1)):
            if ran > 0:
                self.slot_insns += ran
            self._last_clock = executed
            self.stepping = False

    def _fold_run(self):
        """A folding lesson's run since the last step: counted -- in the slot after a
        single-step was prepared, else as folded guest execution -- and never a
        fast-forward step."""
        executed = self.m.clock.executed
        ran = executed - self._last_clock
        if ran > 0:
            if self.stepping:
                self.slot_insns += ran
            else:
                self.folded += ran
        self._last_clock = executed

    def ran_since_step(self):
        """Plain guest instructions executed since the last step (a folding lesson's
        narrators say it)."""
        pending = self.m.clock.executed - self._last_clock
        return self.folded + (pending if pending > 0 and not self.stepping else 0)

    def trap_count(self, kind):
        """Traps of `kind` ("int3" or "debug") taken since the lesson began."""
        return self._trap_counts()[kind] - self._base[kind]

    def _trap_counts(self):
        if self.k is None:
            return dict(self._guest_traps)
        traps = self.k.traps
        return {"int3": traps["int3"], "debug": traps["debug"]}

    # -- steps --------------------------------------------------------------------------

    def step(self, title, narration, phase=None, facts=None, event="note", vector=None,
             overrides=None, extra=None, at=None, covers_run=False):
        """Add a step with the machine's state now (`overrides`: register values that the
        trap being handled will write when it returns, e.g. the slot's ip; `at`: where
        the instruction that trapped is, for the fast-forward that led there;
        `covers_run`: the instructions run since the last step are this step's own, its
        narration tells what they did, so no fast-forward step comes before it)."""
        if event == "note":
            self._flush_arm()
        if len(self.steps) >= MAX_STEPS:
            raise LessonError(f"the lesson has more than {MAX_STEPS} steps")
        m = self.m
        executed = m.clock.executed
        if self.fold:
            self._fold_run()
        ran = executed - self._last_clock
        if ran > 0:
            if self.stepping:
                self.slot_insns += ran
            elif not covers_run:
                self._fastforward(ran, at, vector)
        self.stepping = event == "kprobes.singlestep"
        self._last_clock = executed
        regs = {name: m.engine.reg(name) for name in REG_NAMES}
        if overrides:
            regs.update(overrides)
        trap_no = None
        if vector is not None:
            self.traps += 1
            if self.fold:       # the traps folded away keep their numbers
                counts = self._trap_counts()
                self.traps = max(self.traps, sum(counts[kind] - self._base[kind]
                                                 for kind in ("int3", "debug")))
            trap_no = self.traps
        self.steps.append(self._state(title, narration, phase, facts or {}, event, vector,
                                      trap_no, regs, extra))
        self.folded = 0
        self._last_ip = regs["ip"]

    def _fastforward(self, ran, at=None, vector=None):
        """The plain run up to now, one step (`vector`: the trap that ends it, counted
        already but not part of the run)."""
        self._ending_trap = GUEST_TRAPS.get(vector)
        ip = self.m.engine.reg("ip") if at is None else at
        fmt = self.short
        self.steps.append(self._state(
            "fast-forward", f"{ran:,} guest instruction{'s' if ran != 1 else ''} ran, from "
            f"{fmt(self._last_ip)} to {fmt(ip)}"
            + (", with nothing for kprobes to do." if self.k is not None else "."),
            "body", {"instructions": ran, "from": self._last_ip, "to": ip}, "fastforward",
            None, None, self._regs_before(at), None))
        if self._before_trap and self.steps[-1]["kprobes"] is not None:
            # kprobe_handler() has taken the CPU already; the run that led here had not.
            self.steps[-1]["kprobes"].update(status="-", current=None)

    def _regs_before(self, at):
        """The registers as the run that ends now left them: with ip at the instruction
        that trapped (the CPU has already moved past an int3)."""
        regs = {name: self.m.engine.reg(name) for name in REG_NAMES}
        if at is not None and self._before_trap:
            regs["ip"] = at
        return regs

    def _state(self, title, narration, phase, facts, event, vector, trap_no, regs, extra):
        prev = self._prev_regs
        changed = [n for n in REG_NAMES if prev is not None and regs[n] != prev[n]]
        self._prev_regs = regs
        ip = regs["ip"]
        counts = self._trap_counts()
        if event == "fastforward" and self._ending_trap is not None:
            counts[self._ending_trap] -= 1
        step = {
            "i": len(self.steps) + 1, "n": None, "design": self.design,
            "clock": self.m.clock.now, "phase": phase, "event": event,
            "vector": vector, "trap_no": trap_no,
            "where": {"ip": ip, "sym": self.short(ip)},
            "title": title, "narration": narration, "facts": _plain(facts),
            "regs": regs, "changed": changed,
            "flags": {"TF": int(bool(regs["flags"] & X86_EFLAGS_TF)),
                      "IF": int(bool(regs["flags"] & X86_EFLAGS_IF))},
            "code": self.code_rows(ip), "slot": self.slot_rows(ip),
            "stack": self.stack_rows(regs["sp"]),
            "kprobes": self.kprobes_state(),
            "counters": {"int3": counts["int3"] - self._base["int3"],
                         "debug": counts["debug"] - self._base["debug"],
                         "slot_insns": self.slot_insns},
            "extra": extra,
        }
        self._prev_ip = ip
        return step

    # -- panels -------------------------------------------------------------------------

    def short(self, addr):
        """`sym+0xoff` (the module in brackets), `slot(PROBE)+0xoff` in a probe's
        instruction slot, or the bare hex."""
        label = self.labels.get(addr)
        if label is not None:
            return label
        p = self._slot_of(addr)
        if p is not None:
            return f"slot({self.short(p.addr)})+{addr - p.ainsn.slot:#x}"
        sym = self.m.symbols.symbol_at(addr)
        if sym is None or addr - sym.addr >= max(sym.size, 1):
            return f"{addr:#x}"
        text = f"{sym.name}+{addr - sym.addr:#x}"
        return f"{text} [{sym.module}]" if sym.module else text

    def _slot_of(self, addr):
        """The probe whose instruction slot holds `addr`, or None."""
        for p in self.k.table.values() if self.k is not None else ():
            ainsn = p.ainsn
            if ainsn is not None and ainsn.slot <= addr < ainsn.slot + len(ainsn.copy):
                return p
        return None

    def code_rows(self, ip):
        """The watched function's instructions as the program has them (breakpoints read
        through), a window around ip when ip is inside it."""
        sym = self.watched
        if sym is None:
            return []
        m = self.m
        size = max(sym.size, 1)
        original = bytes(m.text_byte(a) for a in range(sym.addr, sym.addr + size))
        now = m.read(sym.addr, size)
        if self._decoded[0] != (sym.addr, original):
            self._decoded = ((sym.addr, original), disassemble(original, sym.addr))
        insns = self._decoded[1]
        centre = next((n for n, (a, s, _b, _t) in enumerate(insns) if a <= ip < a + s), None)
        if centre is None and self.probe is not None and self.probe.addr is not None:
            centre = next((n for n, (a, s, _b, _t) in enumerate(insns)
                           if a <= self.probe.addr < a + s), None)
        start = max(0, min((centre or 0) - 2, len(insns) - CODE_ROWS))
        rows = []
        for addr, size, code, text in insns[start:start + CODE_ROWS]:
            armed = now[addr - sym.addr] != code[0] and addr not in self._unarmed
            rows.append({"addr": addr, "label": self.short(addr), "bytes": code.hex(" "),
                         "armed": f"{now[addr - sym.addr]:02x}" if armed else "",
                         "text": text,
                         "mark": ">" if addr <= ip < addr + size else (
                             "*" if self._prev_ip is not None and
                             addr <= self._prev_ip < addr + size else "")})
        return rows

    def slot_rows(self, ip):
        """The focus probe's instruction slot: the copy as it is in guest memory, each
        byte that differs from the original instruction marked (a repaired displacement)."""
        p = self.probe
        if p is None or p.ainsn is None or not p.registered:
            return None
        ainsn = p.ainsn
        copy = self.m.read(ainsn.slot, len(ainsn.copy))
        original = bytes(self.m.text_byte(p.addr + n) for n in range(len(copy)))
        insn = disassemble(copy, ainsn.slot, 1)[0]
        repaired = [n for n in range(insn[1]) if copy[n] != original[n]]
        tail = ainsn.slot + insn[1]
        return {"addr": ainsn.slot, "probe": self.short(p.addr),
                "rows": [{"addr": ainsn.slot, "label": "slot+0x0",
                          "bytes": insn[2].hex(" "), "text": insn[3],
                          "repaired": repaired,
                          "mark": ">" if ainsn.slot <= ip < tail else (
                              "*" if ip == tail else "")}],
                "after": ip == tail}

    def stack_rows(self, sp):
        rows = []
        m = self.m
        tramp = self._tramp
        seen = {}
        for n in range(-STACK_ABOVE, STACK_BELOW):
            addr = sp + 8 * n
            try:
                value = m.mem.u64(addr)
            except MemoryFault:
                continue
            seen[addr] = value
            old = self._prev_stack.get(addr)
            note = self.stack_labels.get(addr, "")
            swap = self.stack_notes.get(addr)
            swapped = swap is not None and value == swap[1]
            if swapped:
                note = (note + " " if note else "") + \
                    f"was {self.short(swap[0])} -> now " + \
                    self.short(swap[1]).removesuffix("+0x0")
            elif value == tramp:
                note = (note + " " if note else "") + "kretprobe_trampoline"
            rows.append({"addr": addr, "off": 8 * n, "value": value,
                         "sym": self.short(value) if m.is_kernel_text(value) or
                         value in self.labels or self._slot_of(value) else "",
                         "changed": old is not None and old != value,
                         "sp": n == 0, "note": note, "swapped": swapped})
        self._prev_stack = seen
        return rows

    def kprobes_state(self):
        k = self.k
        if k is None:
            return None
        state = k.cpu_state()
        nmissed = {}
        pools = {}
        for p in k.probes():
            label = self.probe_label(p)
            rp = p.kretprobe
            if rp is not None:
                pools[label] = {"free": len(rp.free_instances), "used": len(rp.used_instances),
                                "nmissed": rp.nmissed}
            nmissed[label] = p.nmissed
        bucket = []
        try:
            task = self.m.current_addr
        except MemoryFault:
            task = None
        rps = k.kretprobes
        for ri in rps.instances():
            if ri.task == task:
                bucket.append({"rp": self.probe_label(ri.rp.kp) if ri.rp else "orphan",
                               "ret_addr": ri.ret_addr, "ret": self.short(ri.ret_addr),
                               "slot": ri.stack_addr})
        cur = state["current_kprobe"]
        return {"status": state["status"],
                "current": self.probe_label(cur) if cur is not None else None,
                "saved": self.probe_label(state["saved"]) if state["saved"] else None,
                "nmissed": nmissed, "pools": pools, "bucket": bucket,
                "task": self.task_name()}

    def task_name(self):
        try:
            cur = self.m.current
        except MemoryFault:
            return None
        return str(cur) if cur else None

    def probe_label(self, p):
        name = self.names.get(p)
        if name is not None:
            return f"{name} {self._place_label(p)}"
        return self._place_label(p)

    def _place_label(self, p):
        if p.kind == "r" or p.kretprobe is not None:
            return "r:" + self.short(p.addr)
        if getattr(p, "internal", False):
            return "trampoline"
        return "p:" + self.short(p.addr)

    # -- the result -----------------------------------------------------------------------

    def finish(self):
        self.detach()
        return self.steps


def _overrides(event):
    """Register values a trap handler will write when it returns."""
    if event.kind in ("kprobes.singlestep", "kprobes.fixup"):
        return {"ip": event.data["ip"], "flags": event.data["flags"]}
    if event.kind == "kprobes.handler-returned":
        # what the handler wrote, which reaches the CPU when the trap returns
        return {name: value for name, value in event.data["regs"].items()
                if name in REG_NAMES}
    return None


def _plain(value):
    """Facts as JSON values: probes by their address, instances by their fields."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    if value is None or isinstance(value, (bool, int, str)):
        return value
    raise LessonError(f"a lesson fact must be plain data, not {type(value).__name__}")


TRAP_EVENTS = ("kprobes.trap", "trap")
STEP_EVENTS = ("kprobes.singlestep", "kprobes.fixup", "kprobes.trap")
GUEST_TRAPS = {3: "int3", 1: "debug"}     # vector -> counter, for a lesson without kprobes


def _untold(rec, ev):
    return None


def _note_swap(rec, ev):
    """The swap's stack note ("was ... -> now ...") without a step."""
    rec.stack_notes[ev.slot] = (ev.old, ev.new)


# -- the default narration of each mechanism event -----------------------------------------
# Each returns (title, narration, phase, facts); every number in the text comes from the
# event or the machine.

def _tell_register(rec, ev):
    p = ev.probe
    if rec.probe is None and p.ainsn is not None:
        rec.probe = p
    if p.ainsn is None:
        return None
    return ("register_kprobe",
            f"register_kprobe() copied the {p.ainsn.length}-byte instruction at "
            f"{rec.short(ev.addr)} ({p.ainsn.text}) into the instruction slot at "
            f"{ev.slot:#x}.",
            "arm", {"addr": ev.addr, "slot": ev.slot, "length": p.ainsn.length})


def _tell_arm(rec, ev):
    return ("arm", f"The first byte at {rec.short(ev.addr)}, {ev.opcode:02x}, is replaced by "
            "cc (int3): the next time the CPU gets there it traps.", "arm",
            {"addr": ev.addr, "opcode": ev.opcode})


def _tell_disarm(rec, ev):
    return ("disarm", f"The original byte {ev.opcode:02x} is written back at "
            f"{rec.short(ev.addr)}.", "disarm", {"addr": ev.addr, "opcode": ev.opcode})


def _tell_trap(rec, ev):
    p = ev.probe
    vector = ev.vector
    if vector == 3:
        rec.probe = p if p is not None and p.ainsn is not None else rec.probe
        ip = ev.ip + 1
        return ("int3", f"The CPU executed the int3 at {rec.short(ev.ip)}. int3 is a trap: "
                f"the saved ip is {ip:#x}, already past the 1-byte instruction, so "
                f"kprobe_handler() looks up the probe at ip - 1 = {ev.ip:#x}.",
                "int3", {"probe_addr": ev.ip, "trap_ip": ip, "vector": 3})
    if vector == 1:
        dr6 = ev.data.get("dr6", 0)
        return ("#DB", f"With TF set the CPU ran exactly one instruction in the slot and "
                f"raised a debug trap at {rec.short(ev.ip)}, DR6 = {dr6:#x} with BS "
                f"(bit 14, single-step) {'set' if dr6 & DR6_BS else 'clear'}: "
                "post_kprobe_handler() runs.", "db",
                {"ip": ev.ip, "vector": 1, "dr6": dr6, "bs": int(bool(dr6 & DR6_BS))})
    return (vector_name(vector), f"A {vector_name(vector)} while kprobes was running, at "
            f"{rec.short(ev.ip)}.", "fault", {"ip": ev.ip, "vector": vector})


def _tell_handler(rec, ev):
    which = ev.which
    regs = ev.regs
    p = ev.probe
    whose = f"{rec.names[p]}'s" if p in rec.names else "The"
    if which == "pre_handler":
        return ("pre_handler", f"{whose} pre_handler is called with regs.ip = "
                f"{regs['ip']:#x}, which is the probe address {p.addr:#x} + 1, because the "
                "int3 has already run.", "pre", {"regs_ip": regs["ip"], "addr": p.addr})
    if which == "post_handler":
        return ("post_handler", f"{whose} post_handler is called with regs.ip = "
                f"{regs['ip']:#x}, still inside the slot: only the one displaced "
                "instruction has run, and the function is far from done.", "post",
                {"regs_ip": regs["ip"], "slot": p.ainsn.slot})
    if which == "handler":
        ri = ev.instance
        return ("kretprobe handler", f"The kretprobe's handler runs with regs.ax = "
                f"{regs['ax']:#x}, the return value; this instance will resume at "
                f"{rec.short(ri.ret_addr)}.", "R.handler",
                {"ax": regs["ax"], "ret_addr": ri.ret_addr})
    if which == "entry_handler":
        return ("entry_handler", "The kretprobe's entry_handler runs at the function's "
                "entry.", "E.entry", {"ip": regs["ip"]})
    return None


def _tell_handler_returned(rec, ev):
    if ev.which == "pre_handler" and ev.value:
        return ("pre_handler returned 1", f"The pre_handler returned {ev.value}: it set "
                f"regs.ip to {rec.short(ev.regs['ip'])} itself, so there is no single-step.",
                "pre", {"value": ev.value, "ip": ev.regs["ip"]})
    return None


def _tell_singlestep(rec, ev):
    return ("prepare_singlestep", f"prepare_singlestep(): TF=1 and IF=0 in the saved "
            f"flags, and ip = the slot {ev.slot:#x}, so that returning from the trap runs "
            f"the copy ({ev.insn}) and traps again.", "ss",
            {"slot": ev.slot, "flags": ev.flags})


def _tell_fixup(rec, ev):
    return ("resume_execution", f"resume_execution() ({ev.resume.name.lower()}) moves ip "
            f"from {rec.short(ev.from_ip)} to {rec.short(ev.ip)} in the original function, "
            "and the trapped TF and IF come back.", "resume",
            {"from_ip": ev.from_ip, "ip": ev.ip, "resume": ev.resume.name, "flags": ev.flags})


def _tell_swap(rec, ev):
    rec.stack_notes[ev.slot] = (ev.old, ev.new)
    return ("arch_prepare_kretprobe", f"arch_prepare_kretprobe(): the return address in the "
            f"stack slot at {ev.slot:#x} was {rec.short(ev.old)}; it is now "
            f"{rec.short(ev.new)}, so the function's ret will go to the trampoline.",
            "E.swap", {"slot": ev.slot, "old": ev.old, "new": ev.new})


def _tell_instance(rec, ev):
    ri = ev.instance
    rp = ri.rp
    if ev.what == "taken":
        return ("instance taken", f"An instance is taken from the free list ({len(rp.free_instances)} "
                f"left) and added at the head of bucket {ev.bucket} of task {ev.task:#x}.",
                "E.instance", {"free": len(rp.free_instances), "bucket": ev.bucket,
                               "task": ev.task, "ret_addr": ri.ret_addr})
    return (f"instance {ev.what}", f"The instance is {ev.what}"
            + (f": back on the free list ({len(rp.free_instances)} free)." if rp else "."),
            "R.recycle", {"what": ev.what, "bucket": ev.bucket, "task": ev.task})


def _tell_miss(rec, ev):
    p = ev.probe
    label = rec.probe_label(p.kp if hasattr(p, "kp") else p)
    return ("miss", f"A miss on {label}, cause {ev.cause!r}: nmissed is now {p.nmissed}.",
            "miss", {"probe": label, "cause": ev.cause, "nmissed": p.nmissed})


def _tell_guest_trap(rec, ev):
    return (vector_name(ev.vector), f"The CPU takes a {vector_label(ev.vector)} at "
            f"{rec.short(ev.ip)} that no host handler claims: it goes through the guest's "
            "IDT.", "trap", {"ip": ev.ip, "vector": ev.vector})


def _tell_delivered(rec, ev):
    return ("IDT gate", f"The CPU entered the guest's vector {ev.vector} gate at "
            f"{rec.short(ev.ip)} with the exception frame pushed at sp = {ev.sp:#x}.",
            "gate", {"ip": ev.ip, "sp": ev.sp, "vector": ev.vector, "flags": ev.flags})


DEFAULT_NARRATORS = {
    "kprobes.register": _tell_register,
    "kprobes.arm": _tell_arm,
    "kprobes.disarm": _tell_disarm,
    "kprobes.trap": _tell_trap,
    "kprobes.handler": _tell_handler,
    "kprobes.handler-returned": _tell_handler_returned,
    "kprobes.singlestep": _tell_singlestep,
    "kprobes.fixup": _tell_fixup,
    "kprobes.swap": _tell_swap,
    "kprobes.instance": _tell_instance,
    "kprobes.miss": _tell_miss,
    "trap": _tell_guest_trap,
    "delivered": _tell_delivered,
}


# -- the lesson -----------------------------------------------------------------------------

@dataclass
class Demo:
    name: str
    question: str
    tier: str                     # "C" core, "S" second
    confusions: tuple             # numbers of CONFUSIONS it resolves
    record: object                # record() -> (steps, facts)
    claims: list = field(default_factory=list)
    prose: str = ""               # the transcript's opening paragraph
    after: str = ""               # and its closing one


class Claim:
    """A statement the demo makes, checked over the recorded steps: check(lesson) returns
    (ok, detail), detail showing the values compared."""

    def __init__(self, text, check):
        self.text = text
        self.check = check


def trap_counts(int3, debug):
    """A claim's check: the lesson's trap counters end at exactly these."""
    def check(lesson):
        counted = lesson.final()["counters"]
        got = {"int3": counted["int3"], "debug": counted["debug"]}
        return got == {"int3": int3, "debug": debug}, f"counted {got}"
    return check


class Lesson:
    """A recorded demo: its steps, its claims checked, and the text around it."""

    def __init__(self, demo, steps, facts=None):
        self.demo = demo
        self.name = demo.name
        self.question = demo.question
        self.steps = steps
        self.facts = facts or {}
        for n, step in enumerate(steps, 1):
            step["i"] = n
            step["n"] = len(steps)
        self.claims = []
        for claim in demo.claims:
            try:
                ok, detail = claim.check(self)
            except (KeyError, IndexError, StopIteration) as exc:
                ok, detail = False, f"the trace lacks what it checks ({exc!r})"
            self.claims.append({"text": claim.text, "ok": bool(ok), "detail": detail})

    @property
    def designs(self):
        return sorted({s["design"] for s in self.steps if s["design"]}, reverse=True)

    def header(self):
        designs = self.designs
        text = SEMANTICS
        if designs:
            text += ", " + " vs ".join("kretprobe " + DESIGN_NAMES[d] for d in designs)
        return text

    def failed_claims(self):
        return [c for c in self.claims if not c["ok"]]

    # -- queries the claims use ---------------------------------------------------------

    def select(self, event=None, phase=None, design=None, vector=None):
        return [s for s in self.steps
                if (event is None or s["event"] == event)
                and (phase is None or s["phase"] == phase)
                and (design is None or s["design"] == design)
                and (vector is None or s["vector"] == vector)]

    def first(self, **kw):
        found = self.select(**kw)
        if not found:
            raise KeyError(f"no step with {kw}")
        return found[0]

    def final(self, design=None):
        steps = self.select(design=design) if design else self.steps
        return steps[-1]

    def traps(self, design=None, vector=None):
        return len([s for s in self.select(design=design, vector=vector)
                    if s["trap_no"] is not None])

    # -- export ---------------------------------------------------------------------------

    def to_json_lines(self):
        head = {"lesson": self.name, "question": self.question, "semantics": self.header(),
                "steps": len(self.steps), "claims": self.claims, "facts": _plain(self.facts)}
        lines = [json.dumps(head, sort_keys=True)]
        lines += [json.dumps(step, sort_keys=True) for step in self.steps]
        return "\n".join(lines) + "\n"
