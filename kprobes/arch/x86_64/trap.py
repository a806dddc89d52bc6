"""kprobes, x86_64: the trap path (like arch/x86_64/kernel/kprobes.c of 2.6.13, with the
later fixes that keep the machine right):

  * arch_init_kprobes(): the int3, debug and fault handlers put in the machine's trap
    table -- the only place that names a vector;
  * arch_prepare_kprobe / arm / disarm / remove: the copy in its slot, 0xCC written and
    the byte restored through the machine's text_poke (the translation cache is
    flushed, so it holds even from inside a handler);
  * can_probe(): the placement checks that read instructions;
  * kprobe_handler (int3), post_kprobe_handler (#DB after the step, with
    resume_execution() of insn.py) and kprobe_fault_handler, and prepare_singlestep's
    flags bookkeeping.

The per-CPU state (current_kprobe, kprobe_status, the saved flags, the one-deep `prev`
save area) is a C KprobeCtlblk (trap.c), `ArchKprobes.kcb`.  What the machine's trap table
calls for vectors 3 and 1 are trap.c's C handlers: they do the plain hit's bookkeeping in C
-- the same steps as kprobe_handler and post_kprobe_handler here, which stay the reference
-- and hand every other case to this file through trap.c's slow-path protocol
(kprobe_handler, post_kprobe_handler, handler_raised).  `fastpath = False` sends every
trap here.

Context: trap.  Every handler here runs inside a Unicorn interrupt hook (or is called
directly like one): no emu_start except a user handler's own m.call (nested emulation),
text edits through text_poke.  Each trap handler gets ip and flags as trapped (the
engine's C interrupt hook read them) and returns what register_trap_handler says: False
(not ours), True (nothing to write) or the (ip, flags) to resume with, which that hook
writes natively; the other registers a user's handler touches are read and written by
the pt_regs view.  Each entry checks its precondition and raises KprobeBug when it does
not hold.

Must not be imported by emu.
"""

import errno as _errno

from emu import MemoryFault
from emu.cpu import X86_EFLAGS_IF, X86_EFLAGS_TF, PtRegs
from emu.engine import REG_IDS
from emu.interrupts import CTrapHandler
from kprobes.arch.x86_64 import _trap
from kprobes.arch.x86_64.insn import (BREAKPOINT_INSTRUCTION, MAX_INSN_SIZE, FunctionInsns,
                                      InsnError, Resume, copy_for_slot, decode, on_boundary,
                                      rep_count_mask, rep_ends_by_count, resume_execution)
from kprobes.errors import KprobeBug, KprobeError

# kprobe_status values (defined in trap.c)
KPROBE_HIT_ACTIVE = _trap.KPROBE_HIT_ACTIVE
KPROBE_HIT_SS = _trap.KPROBE_HIT_SS
KPROBE_REENTER = _trap.KPROBE_REENTER
KPROBE_HIT_SSDONE = _trap.KPROBE_HIT_SSDONE
_STEPPING = (KPROBE_HIT_SS, KPROBE_REENTER)
STATUS_NAMES = {KPROBE_HIT_ACTIVE: "KPROBE_HIT_ACTIVE", KPROBE_HIT_SS: "KPROBE_HIT_SS",
                KPROBE_REENTER: "KPROBE_REENTER", KPROBE_HIT_SSDONE: "KPROBE_HIT_SSDONE"}

INT3_VECTOR = 3
DEBUG_VECTOR = 1
# Faults kprobes looks at while it is running (DIE_GPF, DIE_PAGE_FAULT, and the rest a
# stepped instruction can raise).
FAULT_VECTORS = (0, 6, 12, 13, 14, 17)
PAGE_FAULT_VECTOR = 14
TRAP_HANDLER_EXCEPTION = 13    # trapnr given to fault_handler for a non-memory exception
_IP_FLAGS = ("ip", "flags")    # written through the engine only where a trap cannot return them
_regs_at_trap = PtRegs.at_trap    # the view every pre/post/fault handler gets
# The trap path new Kprobes objects take: True, the C path of trap.c for the plain hit
# (Python for the rest); False, this file's Python methods for every trap -- the reference,
# which the tests run too (k.arch.fastpath switches one Kprobes object).
TRAP_FASTPATH = True
# An event program's register sources that are not read from the CPU (the pt_regs view
# holds them as trapped), and its stores (trap.c's EV_*).
_EV_REG_SOURCES = {"ip": (_trap.EV_SRC_IP, 0), "flags": (_trap.EV_SRC_FLAGS, 0)}
_EV_STORES = {"raw": _trap.EV_ST_RAW, "mem": _trap.EV_ST_MEM, "umem": _trap.EV_ST_UMEM}
_MASK64 = (1 << 64) - 1
# Functions up to this size are decoded whole, once, for the boundary checks of all their
# probes (FunctionInsns); a larger one is decoded up to each probe, as it comes.
FUNCTION_DECODE_MAX = 16 << 10
FUNCTION_CACHE_MAX = 4096


def arch_init_kprobes(core):
    """The arch half of init_kprobes(): the trap path for `core` (a kprobes.Kprobes), its
    handlers first in the machine's trap table for int3, #DB and the faults."""
    arch = ArchKprobes(core)
    m = core.m
    m.register_trap_handler(INT3_VECTOR, arch.int3, first=True)
    m.register_trap_handler(DEBUG_VECTOR, arch.debug, first=True)
    for vector in FAULT_VECTORS:
        m.register_trap_handler(vector, arch.kprobe_fault_handler, first=True)
    return arch


def _check_entry(kcb, entry, vector, want):
    """The precondition of every trap entry: the vector it is for, and a state whose
    `running` and `current_kprobe` agree (trap.c's check_entry).  The entries test it
    inline and call this to raise."""
    if vector != want:
        raise KprobeBug(f"kprobes: {entry} called for vector {vector}, not {want}")
    if kcb.running != (kcb.current_kprobe is not None):
        raise KprobeBug(f"kprobes: {entry} entered with running={int(kcb.running)} but "
                        f"current_kprobe {'set' if kcb.current_kprobe else 'None'}")


class ArchKprobes:
    """The x86_64 part of one Kprobes: its trap handlers, its per-CPU state (`kcb`) and the
    arch_* operations the generic core calls."""

    def __init__(self, core):
        self.core = core
        self.m = core.m
        self.engine = core.m.engine
        self.clock = core.m.clock
        self.kcb = _trap.KprobeCtlblk(core.table, self.m.observers, self.engine.regfile,
                                      self.clock.counter, self.kprobe_handler,
                                      self.post_kprobe_handler, self.handler_raised)
        self.kcb.fastpath = TRAP_FASTPATH
        # The machine's trap-table entries for vectors 3 and 1: trap.c's C handlers.
        self.int3 = CTrapHandler(_trap.INT3, self.kcb)
        self.debug = CTrapHandler(_trap.DEBUG, self.kcb)
        # Reproduce 2.6.13's indirect call/jmp bug in the probes prepared from now on
        # (insn.decode's ff_test_2613; off: the later fix, which reads ModRM).
        self.ff_test_2613 = False
        # What resume_execution reaches memory with, bound once (it runs per hit).
        self._read_u64 = self.m.mem.u64
        self._write_u64 = self.m.mem.set_u64
        # function address -> its FunctionInsns: its original bytes are checked against
        # the text's at each use, so text that changed (a module loaded where another
        # was) is decoded again.
        self._functions = {}
        self._checked = None           # (address, FunctionInsns) can_probe() looked at last
        self._rep_count = 0            # rCX before the step of a rep string instruction

    @property
    def fastpath(self):
        """True: trap.c takes the plain hit; False: every trap runs this file's methods."""
        return self.kcb.fastpath

    @fastpath.setter
    def fastpath(self, value):
        self.kcb.fastpath = value

    @property
    def fast_hits(self):
        """Hits whose int3 the C path took."""
        return self.kcb.fast_hits

    # -- kprobe events -----------------------------------------------------------------

    def native_event(self, handler, programs, **layout):
        """A kprobe event's pre_handler that trap.c can record at a hit without calling
        `handler` (an EventProbe, which is `handler` when called), or `handler` itself
        when the arguments' native `programs` (FetchArg.native_code(), None for one it
        cannot express) are more than the C path does.  `layout` is the rest of
        EventProbe's keywords (the event, the buffer, the task layout; see trap.c); guest
        memory it reads as emu.memory.Memory does (RAM itself through the kernel mapping)."""
        if None in programs or len(programs) > _trap.EV_MAX_ARGS or \
                layout["comm_len"] > _trap.EV_COMM_MAX or \
                layout["record_size"] > layout["page_size"]:
            return handler
        out = []
        for (kind, value), derefs, store, store_off, size, bitfield in programs:
            if len(derefs) > _trap.EV_MAX_DEREFS:
                return handler
            if kind == "reg":
                src, value = _EV_REG_SOURCES.get(value, (_trap.EV_SRC_REG, REG_IDS[value]))
            else:
                src = _trap.EV_SRC_IMM if kind == "imm" else _trap.EV_SRC_STACK
            lshift, rshift, bits = bitfield or (0, 0, 0)
            out.append((src, value & _MASK64, derefs, _EV_STORES[store], store_off, size,
                        lshift, rshift, bits))
        mem = self.m.mem
        return _trap.EventProbe(handler=handler, program=tuple(out), mem=mem,
                                ram=self.engine.ram_address, ram_size=mem.ram_size,
                                kernel_map=mem.kernel_map, **layout)

    # -- registration side ----------------------------------------------------------

    def can_probe(self, addr, probed):
        """The placement checks that read the text, in Linux's order: EILSEQ off an
        instruction boundary of the function holding addr (can_probe()), then EINVAL on
        unmapped text or on an int3 that is not a kprobe's (unless `probed`: the address
        already carries one of ours), which the copy of the instruction finds."""
        m = self.m
        sym = m.symbols.symbol_at(addr)
        self._checked = None
        try:
            if sym is not None and sym.addr != addr:
                insns = self._function_insns(sym, addr)
                self._checked = (addr, insns)     # prepare() of this address reuses it
                if not (insns.on_boundary(addr) if insns is not None else on_boundary(
                        self.core.original_bytes(sym.addr, addr - sym.addr + MAX_INSN_SIZE),
                        sym.addr, addr)):
                    raise KprobeError(_errno.EILSEQ, f"{m.symbols.format(addr)}: not an "
                                      "instruction boundary")
            guest = self.core.guest_kprobes
            if guest is not None and not probed:
                kp = guest.guest.at(addr)
                if kp is not None and kp.optimized and m.mem.read(addr, 1)[0] == \
                        BREAKPOINT_INSTRUCTION:
                    raise KprobeError(_errno.EBUSY, f"{m.symbols.format(addr)}: Linux's own "
                                      "kprobe there is being optimized (its jmp is queued)")
                if guest.shared_at(addr) is not None:
                    probed = True       # Linux's armed int3: shared (guest_kprobes.py)
            if not probed and m.mem.read(addr, 1)[0] == BREAKPOINT_INSTRUCTION:
                raise KprobeError(_errno.EINVAL, f"{m.symbols.format(addr)}: an int3 is "
                                  "already there and it is not a kprobe's")
        except MemoryFault:
            raise KprobeError(_errno.EINVAL, f"{m.symbols.format(addr)}: not mapped") from None

    def _function_insns(self, sym, addr):
        """The FunctionInsns of `sym`'s original text (decoded once while it does not
        change), or None for a function too big to decode whole."""
        size = max(sym.size, addr - sym.addr + 1)
        if size > FUNCTION_DECODE_MAX:
            return None
        code = self.core.original_bytes(sym.addr, size + MAX_INSN_SIZE)
        known = self._functions.get(sym.addr)
        if known is not None and known.code == code:
            return known
        if len(self._functions) >= FUNCTION_CACHE_MAX:
            self._functions.clear()
        insns = self._functions[sym.addr] = FunctionInsns(code, sym.addr)
        return insns

    def prepare(self, p, addr):
        """arch_prepare_kprobe + arch_copy_kprobe: decode, take a slot, write the copy."""
        checked, self._checked = self._checked, None
        if checked is not None and checked[0] == addr and checked[1] is not None:
            insns = checked[1]         # can_probe() just read and decoded the function
            code = insns.code[addr - insns.start:addr - insns.start + MAX_INSN_SIZE]
            if code[0] == BREAKPOINT_INSTRUCTION and self.core.guest_kprobes is not None:
                # Linux's int3 (the function was decoded with it): decode what it covers
                code = self.core.original_insn_bytes(addr, MAX_INSN_SIZE)
                insns = None
        else:
            # A function's entry (can_probe() decoded nothing): decode() finds the
            # instruction's length from these bytes itself.
            code = self.core.original_insn_bytes(addr, MAX_INSN_SIZE)
            insns = None
        known = insns.at(addr) if insns is not None else None
        slot = None
        try:
            ainsn = decode(code, addr, *(known or ()), ff_test_2613=self.ff_test_2613)
            slot = self.core.slots.get_insn_slot()
            ainsn.copy = copy_for_slot(ainsn, addr, slot)
        except InsnError as exc:
            if slot is not None:
                self.core.slots.free_insn_slot(slot)
            raise KprobeError(exc.errno, f"{self.m.symbols.format(addr)}: {exc}") from None
        ainsn.slot = slot
        self.m.text_poke(slot, ainsn.copy)
        p.ainsn = ainsn
        p.opcode = code[0]

    def arm(self, p):
        self.m.text_poke(p.addr, bytes((BREAKPOINT_INSTRUCTION,)))

    def disarm(self, p):
        guest = self.core.guest_kprobes
        if guest is not None and guest.shared_at(p.addr) is not None:
            return              # Linux's own int3 stays (guest_kprobes.py)
        self.m.text_poke(p.addr, bytes((p.opcode,)))

    def remove(self, p):
        if self.kcb.resume_hit is not None and self.kcb.resume_hit[0] == p.addr:
            self.kcb.resume_hit = None
        self.kcb.forget(p.addr)
        self.core.slots.free_insn_slot(p.ainsn.slot)

    # -- state helpers ----------------------------------------------------------------

    def state(self):
        """The per-CPU state as a reader (a lesson, a debugger) sees it."""
        kcb = self.kcb
        prev = kcb.prev
        return {"running": bool(kcb.running),
                "status": STATUS_NAMES.get(kcb.status, "-") if kcb.running else "-",
                "current_kprobe": kcb.current_kprobe,
                "saved": prev[0] if prev is not None else None}

    def set_current_kprobe(self, p, flags):
        kcb = self.kcb
        kcb.current_kprobe = p
        kcb.old_flags = kcb.saved_flags = flags & (X86_EFLAGS_TF | X86_EFLAGS_IF)
        if p.ainsn.if_modifier:
            kcb.saved_flags &= ~X86_EFLAGS_IF

    def save_previous_kprobe(self):
        kcb = self.kcb
        if kcb.prev is not None:
            raise KprobeBug("kprobes: recursion deeper than one level while single-"
                            "stepping (unrecoverable, as in Linux)")
        kcb.prev = (kcb.current_kprobe, kcb.status, kcb.old_flags, kcb.saved_flags)

    def restore_previous_kprobe(self):
        kcb = self.kcb
        kcb.current_kprobe, kcb.status, kcb.old_flags, kcb.saved_flags = kcb.prev
        kcb.prev = None

    def prepare_singlestep(self, p, flags):
        """prepare_singlestep(): TF on, IF off, ip at the copy in the slot.  Returns the
        (ip, flags) the trap resumes with."""
        slot = p.ainsn.slot
        flags = (flags | X86_EFLAGS_TF) & ~X86_EFLAGS_IF
        if p.ainsn.resume == Resume.REP:       # its count, for _finish_step's charge
            self._rep_count = self.engine.reg("cx") & rep_count_mask(p.ainsn)
        if self.m.observers:
            self.core.emit("singlestep", probe=p, slot=slot, insn=p.ainsn.text, ip=slot,
                           flags=flags)
        return slot, flags

    def _read_sp(self):
        return self.engine.reg("sp")

    # -- int3 -------------------------------------------------------------------------

    def kprobe_handler(self, vector, ip, flags):
        """int3 (vector 3), ip and flags as trapped: the probe address is ip - 1.
        Context: trap (the slow-path entry for the int3s trap.c does not take)."""
        kcb = self.kcb
        running = kcb.running
        if vector != INT3_VECTOR or running != (kcb.current_kprobe is not None):
            _check_entry(kcb, "the int3 handler", vector, INT3_VECTOR)
        addr = ip - 1
        core = self.core
        p = core.table.get(addr)
        if running:
            return self._reentered(p, addr, flags)
        if p is None:
            return self._not_ours(addr, flags)
        self.clock.discount(1)           # the int3 ran for us, not for the guest
        kcb.n_int3 += 1
        kcb.running = True
        kcb.status = KPROBE_HIT_ACTIVE
        # set_current_kprobe(p, flags), inline on the hot path
        kcb.current_kprobe = p
        kcb.old_flags = kcb.saved_flags = flags & (X86_EFLAGS_TF | X86_EFLAGS_IF)
        if p.ainsn.if_modifier:
            kcb.saved_flags &= ~X86_EFLAGS_IF
        if self.m.observers:
            core.emit("trap", vector=INT3_VECTOR, ip=addr, probe=p)
        if p.disabled:
            core.missed_all(p, "disabled")
            if p.guest_shared and core.guest_kprobes.shared_at(addr) is not None:
                return self._to_guest(p, ip, flags, None)
        elif kcb.resume_hit is not None and self.m.call_depth == 0 and \
                kcb.resume_hit == (addr, self._read_sp()):
            kcb.resume_hit = None        # the hit a raising pre_handler stopped goes on
        elif p.pre_handler is not None:
            regs = _regs_at_trap(self.engine, ip, flags)
            if self.m.observers:
                core.emit("handler", which="pre_handler", probe=p, regs=regs.as_dict())
            try:
                changed = p.pre_handler(p, regs)
            except BaseException as exc:  # noqa: BLE001 - handled or re-raised there
                return self.handler_raised("pre_handler", p, regs, exc, ip, flags)
            if self.m.observers:
                core.emit("handler-returned", which="pre_handler", probe=p, value=changed,
                          regs=regs.as_dict())
            ip, flags = regs.trap_return()
            if changed:
                # The handler moved ip: no single-step (modern kernels also release the
                # per-CPU state here; 2.6.13 left it to the handler).
                kcb.unlock()
                return ip, flags
        if p.guest_shared and core.guest_kprobes.shared_at(addr) is not None:
            return self._to_guest(p, ip, flags)
        resume = self.prepare_singlestep(p, flags)
        kcb.status = KPROBE_HIT_SS
        return resume

    def _to_guest(self, p, ip, flags, miss="shared"):
        """Rule step 2: Linux's own kprobe is armed at this address too; kpemu's
        pre_handler has run, and the #BP goes to Linux's handler, which steps or emulates
        the instruction as it does.  The int3 is the guest's: its count stays on the
        guest's clock.  kpemu's post_handler is not called (there is no step of kpemu's
        to end) and the hit counts a miss "shared"."""
        self.clock.discount(-1)
        self.core.rare_traps["int3-shared"] += 1
        if miss is not None:
            self.core.missed_all(p, miss)
        self.kcb.unlock()
        self.engine.set_regs(_IP_FLAGS, (ip, flags))
        return False

    def _singlestep(self, p, flags):
        resume = self.prepare_singlestep(p, flags)
        self.kcb.status = KPROBE_HIT_SS
        return resume

    def _not_ours(self, addr, flags):
        """No probe at addr: a breakpoint removed after this CPU trapped on it (run the
        original instruction; 2.6.13 resumed at addr+1, inside it), or a foreign int3,
        which goes to the guest's own handler."""
        core = self.core
        if self.m.read(addr, 1)[0] != BREAKPOINT_INSTRUCTION:
            self.clock.discount(1)
            core.rare_traps["int3-vanished"] += 1
            return addr, flags
        core.rare_traps["int3-foreign"] += 1
        return False

    def _reentered(self, p, addr, flags):
        """A breakpoint hit while kprobes is already running: from guest code a handler
        runs (m.call) or, never here, from the single-stepped copy."""
        kcb = self.kcb
        if p is None:
            return self._not_ours(addr, flags)
        if kcb.status in _STEPPING:
            raise KprobeBug(f"kprobes: unrecoverable re-entry at "
                            f"{self.m.symbols.format(addr)} while single-stepping")
        # HIT_ACTIVE (a pre/fault handler) or HIT_SSDONE (a post handler; 2.6.13 disarmed
        # the probe for good here, later kernels treat it like ACTIVE): run the
        # instruction, none of p's handlers, and count the miss.
        self.clock.discount(1)
        kcb.n_int3 += 1
        if self.m.observers:
            self.core.emit("trap", vector=INT3_VECTOR, ip=addr, probe=p, reentered=True)
        self.save_previous_kprobe()
        self.set_current_kprobe(p, flags)
        self.core.missed_all(p, "reentered")
        resume = self.prepare_singlestep(p, flags)
        kcb.status = KPROBE_REENTER
        return resume

    # -- debug ------------------------------------------------------------------------

    def post_kprobe_handler(self, vector, ip, flags):
        """#DB after the single-step (vector 1), ip and flags as trapped; returns the
        (ip, flags) to resume with.  Context: trap (the slow-path entry for the #DBs
        trap.c does not take).  Like 2.6.13's post_kprobe_handler:

          1. the post_handler (not for a re-entered step), with regs.ip still in the slot;
          2. the rest is _finish_step().
        """
        kcb = self.kcb
        if vector != DEBUG_VECTOR or kcb.running != (kcb.current_kprobe is not None):
            _check_entry(kcb, "the debug handler", vector, DEBUG_VECTOR)
        if not kcb.running or kcb.status not in _STEPPING:
            return False                 # not ours: the guest's #DB
        p = kcb.current_kprobe
        kcb.n_debug += 1
        if self.m.observers:
            self.core.emit("trap", vector=DEBUG_VECTOR, ip=ip, probe=p,
                           dr6=self.engine.reg("dr6"))
        if kcb.status != KPROBE_REENTER and p.post_handler is not None and not p.disabled:
            kcb.status = KPROBE_HIT_SSDONE
            regs = _regs_at_trap(self.engine, ip, flags)
            if self.m.observers:
                self.core.emit("handler", which="post_handler", probe=p, regs=regs.as_dict())
            try:
                p.post_handler(p, regs, 0)
            except BaseException as exc:  # noqa: BLE001 - finish the step, then re-raise
                return self.handler_raised("post_handler", p, regs, exc, ip, flags)
            if self.m.observers:
                self.core.emit("handler-returned", which="post_handler", probe=p, value=None,
                               regs=regs.as_dict())
            ip, flags = regs.trap_return()
        return self._finish_step(p, ip, flags)

    def _finish_step(self, p, ip, flags, error=None):
        """The end of post_kprobe_handler, after the post_handler:

          1. resume_execution() fixes ip (and the stack) for the original address;
          2. the trapped context's TF and IF come back (kprobe_saved_rflags);
          3. the per-CPU state is released, or the outer probe's restored after a
             re-entered step;
          4. a post_handler's exception (`error`) is re-raised now, with the guest at the
             resume point;
          5. still TF: the guest was single-stepping itself, its own #DB handler takes
             the trap (declining: the machine reads ip and flags, so they are written).
        """
        kcb = self.kcb
        from_ip = ip
        if p.ainsn.resume == Resume.REP and ip != p.ainsn.slot and rep_ends_by_count(
                p.ainsn, self._rep_count, self.engine.reg("cx") & rep_count_mask(p.ainsn),
                flags):
            # The guest's own run of this instruction takes one count more than the
            # stepped copy (insn.rep_ends_by_count): the guest's, so charged to its clock.
            self.clock.discount(-1)
        if p.resume_in_post_handler:
            # The old return-probe design's trampoline: its post handler has set ip to
            # the real return address (2.6.13 recognised it by comparing handlers).
            flags &= ~X86_EFLAGS_TF
        else:
            ip, flags = resume_execution(p.ainsn, p.addr, ip, flags, kcb.old_flags,
                                         self._read_sp, self._read_u64, self._write_u64)
        flags |= kcb.saved_flags
        if self.m.observers:
            self.core.emit("fixup", probe=p, resume=p.ainsn.resume, ip=ip, flags=flags,
                           from_ip=from_ip)
        if kcb.status == KPROBE_REENTER:
            self.restore_previous_kprobe()
        else:
            kcb.unlock()
        if error is not None:
            self.engine.set_regs(_IP_FLAGS, (ip, flags))
            self._attach(error, ip)
            raise error
        if flags & X86_EFLAGS_TF:
            self.engine.set_regs(_IP_FLAGS, (ip, flags))
            return False
        return ip, flags

    # -- a user's handler raised ------------------------------------------------------

    def handler_raised(self, which, p, regs, exc, ip, flags):
        """The `which` handler ("pre_handler" or "post_handler") of `p` raised `exc` in
        the trap at (ip, flags), `regs` the view it was given; this takes the hit over
        (the slow-path entry of trap.c for it too).  Context: trap.

          1. the probe's fault_handler gets it first (trapnr 14 for a guest memory fault,
             else 13); when it handles it the hit goes on as if the handler had
             returned 0;
          2. otherwise the probe and handler are attached to `exc` and:
             a pre_handler's: the guest is put back exactly as before the int3, the
             state released, `exc` re-raised (raising: the C hook writes nothing);
             when the run goes on (m.run; an m.call that raised is abandoned), the
             int3 traps again and that same hit goes on without the pre_handler
             (kcb.resume_hit), so a hit never fires twice;
             a post_handler's: the step is finished first, then `exc` re-raised with the
             guest at the resume point.
        """
        kcb = self.kcb
        if not kcb.running or kcb.current_kprobe is not p or \
                which not in ("pre_handler", "post_handler"):
            raise KprobeBug(f"kprobes: handler_raised({which!r}) for {p!r} while "
                            f"current_kprobe is {kcb.current_kprobe!r}")
        handled = self._fault_handler_took(p, which, regs, exc)
        if which == "pre_handler":
            if handled:
                ip, flags = regs.trap_return()
                return self._singlestep(p, flags)
            self.engine.set_reg("ip", p.addr)
            # Only a run can go on from here: an m.call that raised is abandoned.
            kcb.resume_hit = (p.addr, self._read_sp()) if self.m.call_depth == 0 else None
            self._attach(exc, p.addr)
            kcb.unlock()
            raise exc
        ip, flags = regs.trap_return()
        return self._finish_step(p, ip, flags, None if handled else exc)

    def _fault_handler_took(self, p, which, regs, exc):
        """Offer `exc` to p's fault_handler; blame the probe when it does not take it."""
        trapnr = PAGE_FAULT_VECTOR if isinstance(exc, MemoryFault) else getattr(
            getattr(exc, "oops", None), "vector", None) or TRAP_HANDLER_EXCEPTION
        handled = False
        if p.fault_handler is not None:
            try:
                handled = bool(p.fault_handler(p, regs, trapnr))
            except BaseException:  # noqa: BLE001 - the fault handler's own failure
                pass
        if not handled:
            self._blame(exc, p, which)
        self.core.curr_kprobe = None
        return handled

    def _blame(self, exc, p, which):
        """Attach the probe whose handler raised (the aggregate's child, if one ran)."""
        exc.kprobe = self.core.curr_kprobe or p
        exc.kprobe_handler = which

    def _attach(self, exc, guest_ip):
        """Attach the guest location, once the guest state is settled."""
        p = getattr(exc, "kprobe", None) or self.kcb.current_kprobe
        which = getattr(exc, "kprobe_handler", "handler")
        m = self.m
        where = m.symbols.format(p.addr) if p is not None else "?"
        exc.kprobe = p
        exc.guest_ip = guest_ip
        try:
            task = str(m.current)
        except Exception:  # noqa: BLE001
            task = "?"
        note = (f"kpemu: raised by the {which} of the kprobe at {where}; guest at "
                f"{m.symbols.format(exc.guest_ip)}, task {task}, clock {m.clock.now}")
        if hasattr(exc, "add_note") and note not in getattr(exc, "__notes__", ()):
            exc.add_note(note)

    # -- faults -----------------------------------------------------------------------

    def _abandon_step(self, p, regs):
        """The fault_handler took a fault of the stepped copy: no #DB will end this step,
        so end it here -- an ip the handler left in the slot is moved to the original
        instruction, the trapped context's TF and IF come back, and the state is
        released (2.6.13 kept it, so the next hit found kprobes still running)."""
        kcb = self.kcb
        slot = p.ainsn.slot
        if slot <= regs.ip < slot + MAX_INSN_SIZE:
            regs.ip = p.addr + (regs.ip - slot)
        regs.flags = (regs.flags & ~X86_EFLAGS_TF) | kcb.old_flags
        if kcb.status == KPROBE_REENTER:
            self.restore_previous_kprobe()
        else:
            kcb.unlock()

    def kprobe_fault_handler(self, vector, ip, flags):
        """A fault while kprobes runs: the probe's fault_handler first; a fault in the
        stepped copy is then turned back into a fault of the original instruction.
        Context: trap."""
        kcb = self.kcb
        if vector not in FAULT_VECTORS:
            raise KprobeBug(f"kprobes: the fault handler called for vector {vector}")
        if not kcb.running:
            return False
        p = kcb.current_kprobe
        regs = _regs_at_trap(self.engine, ip, flags)
        self.core.rare_traps["fault"] += 1
        self.core.emit("trap", vector=vector, ip=ip, probe=p)
        handled = False
        if p.fault_handler is not None:
            try:
                handled = p.fault_handler(p, regs, vector)
            except BaseException as exc:
                self._blame(exc, p, "fault_handler")
                self._attach(exc, regs.ip)
                raise
        if handled:
            if kcb.status in _STEPPING:
                self._abandon_step(p, regs)
            return regs.trap_return()
        if kcb.status & KPROBE_HIT_SS:
            # The copy faulted and did not complete (nothing was pushed): report the fault
            # at the original instruction, with the original flags.  Declining, so the
            # machine reads the CPU: write them here.
            regs.ip = p.addr + (regs.ip - p.ainsn.slot)
            regs.flags = (regs.flags & ~X86_EFLAGS_TF) | kcb.old_flags
            kcb.unlock()
            regs.flush()
        return False
