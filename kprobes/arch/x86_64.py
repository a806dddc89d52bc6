"""kprobes, x86_64: everything that knows an opcode (like Linux's
arch/x86_64/kernel/kprobes.c of 2.6.13, with the later fixes that keep the machine right).

  * decoding (capstone): instruction boundaries, what may be stepped out of line;
  * arch_prepare_kprobe / arch_copy_kprobe: the instruction copied to a slot, a %rip-relative
    disp32 re-targeted for the slot;
  * arm / disarm: 0xCC written and the byte restored through the machine's text_poke (the
    translation cache is flushed, so it holds even from inside a handler);
  * the resume action of each instruction, decided once at prepare time, and
    resume_execution() applying it after the single-step;
  * is_IF_modifier, and the flags bookkeeping of prepare_singlestep.

Differences from 2.6.13, each a later Linux fix: legacy prefixes are skipped before the
opcode is examined (2.6.13 skipped only REX, so `f3 c3` -- gcc's `repz ret` -- had its
absolute rip relocated); the 0xff indirect call/jmp test reads the ModRM reg field
(2.6.13 tested the opcode byte, so neither matched); instructions that cannot run out of
line are refused at registration (iret, int3, int n, into, hlt, and undecodable bytes)
instead of breaking the guest at the first hit.

Must not be imported by emu.  Runs partly inside Unicorn hooks (see core.py).
"""

from dataclasses import dataclass

from capstone import CS_ARCH_X86, CS_MODE_64, Cs, CsError
from capstone import x86_const as cx

from emu import MemoryFault
from emu.cpu import PtRegs
from emu.interrupts import CTrapHandler
from kprobes.arch import _x86_64_trap
from kprobes.arch._x86_64_trap import TrapState

BREAKPOINT_INSTRUCTION = 0xCC
MAX_INSN_SIZE = 15
X86_EFLAGS_TF = 0x100
X86_EFLAGS_IF = 0x200

LEGACY_PREFIXES = frozenset((0x66, 0x67, 0x2E, 0x3E, 0x26, 0x64, 0x65, 0x36, 0xF0, 0xF3,
                             0xF2))

# Resume actions (resume_execution cases), decided per instruction at prepare time.
RESUME_RELOCATE = "relocate"        # rip = orig + (rip - slot)
RESUME_PUSHF = "pushf"              # fix the pushed flags image, then relocate
RESUME_RET = "ret"                  # rip is an absolute popped address: leave it
RESUME_CALL = "call"                # fix the pushed return address, then relocate
RESUME_CALL_ABS = "call-indirect"   # fix the pushed return address, keep rip
RESUME_JMP_ABS = "jmp-indirect"     # keep rip

# Instructions that cannot be single-stepped out of line here (mnemonic -> why).
NOT_STEPPABLE = {
    "iret": "iret pops an absolute rip and flags",
    "iretd": "iret pops an absolute rip and flags",
    "iretq": "iret pops an absolute rip and flags",
    "int3": "an int3 cannot be stepped out of line",
    "int": "int n pushes the slot's address as the return address",
    "int1": "int1 pushes the slot's address as the return address",
    "into": "into pushes the slot's address as the return address",
    "hlt": "hlt with interrupts off (as during a single-step) never wakes",
    "syscall": "syscall saves the slot's address",
    "sysret": "sysret leaves kernel context",
    "sysretq": "sysret leaves kernel context",
}

_cs = Cs(CS_ARCH_X86, CS_MODE_64)
_cs.detail = True
_cs_lite = Cs(CS_ARCH_X86, CS_MODE_64)


class ArchError(Exception):
    """An address that cannot carry a probe; `.errno_name` is the errno to return."""

    def __init__(self, errno_name, message):
        super().__init__(message)
        self.errno_name = errno_name


@dataclass(slots=True)
class ArchInsn:
    """p.ainsn: the out-of-line copy and what resume_execution must do for it (slots: the
    C trap path reads slot, resume and if_modifier on every hit)."""
    slot: int            # address of the copy (0 until a slot is taken)
    length: int          # length of the original instruction
    insn: bytes          # the original instruction bytes
    copy: bytes          # what goes into the slot (rip-relative disp re-targeted)
    resume: str          # one of RESUME_*
    if_modifier: bool    # cli, sti, popf, iret: the step's own IF result survives
    text: str            # disassembly, for listings and lessons
    riprel: bool = False
    disp_offset: int = 0  # where a rip-relative disp32 sits in the instruction


def insn_lengths(code, start):
    """(address, length) of each instruction decoded forward from `start`."""
    return [(a, n) for a, n, _m, _o in _cs_lite.disasm_lite(code, start)]


def on_boundary(code, func_start, addr):
    """Whether decoding forward from `func_start` lands exactly on `addr`."""
    pos = func_start
    for address, length in insn_lengths(code, func_start):
        if address >= addr:
            return address == addr
        pos = address + length
    return pos == addr


def _opcode_index(insn_bytes):
    i = 0
    while i < len(insn_bytes) and insn_bytes[i] in LEGACY_PREFIXES:
        i += 1
    if i < len(insn_bytes) and 0x40 <= insn_bytes[i] <= 0x4F:
        i += 1
    return i


def is_IF_modifier(insn_bytes):  # noqa: N802 - Linux's name
    """cli, sti, popf, iret: instructions whose own effect on IF must survive the step."""
    op = insn_bytes[_opcode_index(insn_bytes)]
    return op in (0xFA, 0xFB, 0x9D, 0xCF)


def decode(code, addr):
    """Decode the instruction at `addr` from `code` (its original bytes) and decide how it
    is copied and resumed.  Raises ArchError for what cannot be probed."""
    try:
        insn = next(_cs.disasm(code[:MAX_INSN_SIZE], addr, 1))
    except (StopIteration, CsError):
        raise ArchError("EILSEQ", f"no valid instruction at {addr:#x}") from None
    mnem = insn.mnemonic
    if mnem in NOT_STEPPABLE or mnem.startswith("int"):
        why = NOT_STEPPABLE.get(mnem, "software interrupts push the slot's address")
        raise ArchError("EINVAL", f"cannot probe '{mnem}' at {addr:#x}: {why}")
    if mnem in ("mov", "pop") and insn.operands and \
            insn.operands[0].type == cx.X86_OP_REG and insn.operands[0].reg == cx.X86_REG_SS:
        # A load of SS holds debug traps off for one more instruction, so the step would
        # run past the copy (Linux refuses these too: insn_masking_exception()).
        raise ArchError("EINVAL", f"cannot probe '{mnem} {insn.op_str}' at {addr:#x}: "
                        "a load of SS masks the single-step trap")
    raw = bytes(insn.bytes)
    i = _opcode_index(raw)
    op = raw[i]
    resume = RESUME_RELOCATE
    if op == 0x9C:
        resume = RESUME_PUSHF
    elif op in (0xC3, 0xCB, 0xC2, 0xCA):
        resume = RESUME_RET
    elif op == 0xE8:
        resume = RESUME_CALL
    elif op == 0xFF and i + 1 < len(raw):
        reg = (raw[i + 1] >> 3) & 7       # the ModRM reg field (the 2006 fix)
        if reg in (2, 3):
            resume = RESUME_CALL_ABS
        elif reg in (4, 5):
            resume = RESUME_JMP_ABS
    elif op == 0xEA:
        resume = RESUME_JMP_ABS
    riprel = any(o.type == cx.X86_OP_MEM and o.mem.base == cx.X86_REG_RIP
                 for o in insn.operands)
    disp_offset = insn.disp_offset if riprel else 0
    if riprel and insn.disp_size != 4:
        raise ArchError("EINVAL", f"rip-relative operand without a disp32 at {addr:#x}")
    return ArchInsn(0, insn.size, raw, raw, resume, is_IF_modifier(raw),
                    f"{mnem} {insn.op_str}".strip(), riprel, disp_offset)


def copy_for_slot(ainsn, addr, slot):
    """arch_copy_kprobe: the bytes for the slot at `slot`, a %rip-relative disp32
    re-targeted so it still reaches the original target (length cancels:
    orig+len+old = slot+len+new).  ArchError when the new displacement does not fit."""
    code = bytearray(ainsn.insn)
    disp_offset = ainsn.disp_offset
    if ainsn.riprel:
        old = int.from_bytes(code[disp_offset:disp_offset + 4], "little", signed=True)
        new = addr + old - slot
        if not -(1 << 31) <= new < (1 << 31):
            raise ArchError("EINVAL", f"rip-relative target of {addr:#x} is out of reach "
                            f"of the instruction slot at {slot:#x}")
        code[disp_offset:disp_offset + 4] = new.to_bytes(4, "little", signed=True)
    # Pad with int3: bytes after the copy are never executed with TF set; if something
    # went wrong they trap instead of running garbage.
    return bytes(code) + b"\xcc" * (MAX_INSN_SIZE - len(code))


def resume_execution(ainsn, probe_addr, ip, flags, old_flags, read_sp, read_u64, write_u64):
    """Fix the registers after the copy at ainsn.slot was single-stepped (like
    resume_execution() of 2.6.13 with the later fixes).  Runs inside the #DB hook: `ip`
    and `flags` are the trapped ones, the fixed (ip, flags) are returned; `read_sp()`
    gives the stack pointer (only the pushf and call cases need it).

      1. pushf: the pushed image has the step's TF set and IF clear: put back the
         original TF and IF;
      2. ret/lret (and imm16 forms): rip is the popped absolute address -- clear TF and
         leave rip alone;
      3. call rel32 / indirect call: the pushed return address points after the slot:
         make it point after the original instruction;
      4. indirect call/jmp: rip is the absolute target -- keep it;
      5. everything else (incl. relative branches, taken or not): rip = orig + (rip - slot);
      6. clear TF (Unicorn never clears it on a #DB).
    """
    slot = ainsn.slot
    flags &= ~X86_EFLAGS_TF
    resume = ainsn.resume
    if resume == RESUME_RET:
        return ip, flags
    if resume == RESUME_PUSHF:
        sp = read_sp()
        image = read_u64(sp)
        write_u64(sp, (image & ~(X86_EFLAGS_TF | X86_EFLAGS_IF)) | old_flags)
    elif resume in (RESUME_CALL, RESUME_CALL_ABS):
        sp = read_sp()
        write_u64(sp, probe_addr + (read_u64(sp) - slot))
    if resume not in (RESUME_CALL_ABS, RESUME_JMP_ABS):
        ip = probe_addr + (ip - slot)
    return ip, flags


# -- the trap path ------------------------------------------------------------------------

KPROBE_HIT_ACTIVE = 0x1
KPROBE_HIT_SS = 0x2
KPROBE_REENTER = 0x4
KPROBE_HIT_SSDONE = 0x8

# Faults kprobes looks at while it is running (DIE_GPF, DIE_PAGE_FAULT, and the rest a
# stepped instruction can raise).
FAULT_VECTORS = (0, 6, 12, 13, 14, 17)
TRAP_HANDLER_EXCEPTION = 13    # trapnr given to fault_handler for a non-memory exception
_IP_FLAGS = ("ip", "flags")    # written through ctypes only where a trap cannot return them
_STEPPING = (KPROBE_HIT_SS, KPROBE_REENTER)
_regs_at_trap = PtRegs.at_trap    # the view every pre/post/fault handler gets
# The trap path new Kprobes objects take: True, the C path of x86_64_trap.c for the plain hit
# (Python for the rest); False, this file's Python methods for every trap -- the reference,
# which the tests run too (k.arch.fastpath switches one Kprobes object).
TRAP_FASTPATH = True


class ArchKprobes(TrapState):
    """The per-CPU trap-path state of 2.6.13 (one CPU: current_kprobe, kprobe_status, the
    saved flags, the one-deep `prev` save area) and the three trap handlers the machine
    calls for vectors 3, 1 and the faults.

    The state fields (running, status, current_kprobe, old_flags, saved_flags) and the
    trap counters live in the C base TrapState (kprobes/arch/x86_64_trap.c), and `int3` and
    `debug`, what the machine's trap table calls, are its C handlers: they do the plain
    hit's bookkeeping in C -- the same steps as kprobe_handler and post_kprobe_handler
    below, which stay the reference -- and hand every other case to those methods.
    `fastpath = False` sends every trap here.

    Runs inside Unicorn interrupt hooks: no emu_start here except a handler's own m.call
    (nested emulation), text edits go through text_poke (cache flushed).  Registers: each
    trap handler gets ip and flags as trapped (the engine's C interrupt hook read them)
    and returns the (ip, flags) to resume with, which that hook writes natively; the
    other registers a user's handler touches are read and written natively by the
    pt_regs view (lazily; trap_return() writes what it changed).  The return value
    follows register_trap_handler: False not ours, True nothing to write, or
    (ip, flags).
    """

    def __init__(self, core):
        super().__init__()
        self.core = core
        self.m = core.m
        self.engine = core.m.engine
        self.clock = core.m.clock
        self.prev = None               # save_previous_kprobe()
        self.fastpath = TRAP_FASTPATH
        self.setup_fastpath(core.table, self.m.observers, self.engine.regfile, core,
                            RESUME_RELOCATE, RESUME_RET, RESUME_JMP_ABS, self.clock.counter)
        # The machine's trap-table entries for vectors 3 and 1: the C trap path of
        # x86_64_trap.c, which calls kprobe_handler / post_kprobe_handler for all but the
        # plain hit.
        self.int3 = CTrapHandler(_x86_64_trap.INT3, self)
        self.debug = CTrapHandler(_x86_64_trap.DEBUG, self)
        # What resume_execution reaches memory and sp with, bound once (it runs per hit).
        self._read_u64 = self.m.mem.u64
        self._write_u64 = self.m.mem.set_u64

    # -- registration side ----------------------------------------------------------

    def prepare(self, p, addr):
        """arch_prepare_kprobe + arch_copy_kprobe: decode, take a slot, write the copy."""
        code = self.core.original_bytes(addr, MAX_INSN_SIZE)
        ainsn = decode(code, addr)
        slot = self.core.slots.get_insn_slot()
        try:
            copy = copy_for_slot(ainsn, addr, slot)
        except ArchError:
            self.core.slots.free_insn_slot(slot)
            raise
        ainsn.slot = slot
        ainsn.copy = copy
        self.m.text_poke(slot, copy)
        p.ainsn = ainsn
        p.opcode = code[0]

    def arm(self, p):
        self.m.text_poke(p.addr, bytes((BREAKPOINT_INSTRUCTION,)))

    def disarm(self, p):
        self.m.text_poke(p.addr, bytes((p.opcode,)))

    def remove(self, p):
        self.core.slots.free_insn_slot(p.ainsn.slot)

    # -- state helpers ----------------------------------------------------------------

    def set_current_kprobe(self, p, flags):
        self.current_kprobe = p
        self.old_flags = self.saved_flags = flags & (X86_EFLAGS_TF | X86_EFLAGS_IF)
        if p.ainsn.if_modifier:
            self.saved_flags &= ~X86_EFLAGS_IF

    def save_previous_kprobe(self):
        if self.prev is not None:
            raise RuntimeError("kprobes: recursion deeper than one level while single-"
                               "stepping (unrecoverable, as in Linux)")
        self.prev = (self.current_kprobe, self.status, self.old_flags, self.saved_flags)

    def restore_previous_kprobe(self):
        self.current_kprobe, self.status, self.old_flags, self.saved_flags = self.prev
        self.prev = None

    def unlock(self):
        self.running = False
        self.current_kprobe = None
        self.status = 0
        self.hit_probe = None

    def prepare_singlestep(self, p, flags):
        """prepare_singlestep(): TF on, IF off, ip at the copy in the slot.  Returns the
        (ip, flags) the trap resumes with."""
        slot = p.ainsn.slot
        if self.m.observers:
            self.core.emit("singlestep", probe=p, slot=slot, insn=p.ainsn.text)
        return slot, (flags | X86_EFLAGS_TF) & ~X86_EFLAGS_IF

    def _read_sp(self):
        return self.engine.reg("sp")

    def _handler_raised(self, p, which, regs, exc):
        """A user's handler raised `exc` (called from the except clause around the call,
        so the hot path pays no extra frame): the probe's fault_handler gets it first
        (trapnr 14 for a guest memory fault, else 13) -> True when that handled it;
        otherwise the probe and handler are attached for the re-raise -> False."""
        trapnr = 14 if isinstance(exc, MemoryFault) else getattr(
            getattr(exc, "oops", None), "vector", None) or TRAP_HANDLER_EXCEPTION
        handler = p.fault_handler
        if which != "fault_handler" and handler is not None:
            try:
                if handler(p, regs, trapnr):
                    return True
            except BaseException:  # noqa: BLE001 - the fault handler's own failure
                pass
        exc.kprobe = self.core.curr_kprobe or p
        exc.kprobe_handler = which
        return False

    def _attach(self, exc, guest_ip):
        """Attach the probe and the guest location (once the guest state is settled)."""
        p = getattr(exc, "kprobe", None) or self.current_kprobe
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

    # -- int3 -------------------------------------------------------------------------

    def kprobe_handler(self, vector, ip, flags):
        """int3 (vector 3), ip and flags as trapped: the probe address is ip - 1.  The hot
        path: no register crossing of its own, the pre_handler call, and the (ip, flags)
        of the single-step (or the ones the pre_handler set) returned to the C hook."""
        addr = ip - 1
        core = self.core
        p = core.table.get(addr)
        if self.running:
            return self._reentered(p, addr, flags)
        if p is None:
            return self._not_ours(addr, flags)
        self.clock.discount(1)           # the int3 ran for us, not for the guest
        self.n_int3 += 1
        self.running = True
        self.status = KPROBE_HIT_ACTIVE
        # set_current_kprobe(p, flags), inline on the hot path
        self.current_kprobe = p
        self.old_flags = self.saved_flags = flags & (X86_EFLAGS_TF | X86_EFLAGS_IF)
        if p.ainsn.if_modifier:
            self.saved_flags &= ~X86_EFLAGS_IF
        if self.m.observers:
            core.emit("trap", vector=3, ip=addr, probe=p)
        if p.disabled:
            for child in (p.children if p.is_aggregate else [p]):
                core.missed(child, "disabled")
        elif p.pre_handler is not None:
            regs = _regs_at_trap(self.engine, ip, flags)
            try:
                changed = p.pre_handler(p, regs)
            except BaseException as exc:  # noqa: BLE001 - handled or re-raised there
                changed = self._pre_handler_raised(p, regs, exc)
            ip, flags = regs.trap_return()
            if changed:
                # The handler moved ip: no single-step (modern kernels also release the
                # per-CPU state here; 2.6.13 left it to the handler).
                core.curr_kprobe = None
                self.unlock()
                return ip, flags
        resume = self.prepare_singlestep(p, flags)
        self.status = KPROBE_HIT_SS
        return resume

    def _pre_handler_raised(self, p, regs, exc):
        """The pre_handler raised `exc`: 0 when the probe's fault_handler handled it (the
        hit goes on); otherwise the guest is put back exactly as before the int3 -- the
        probe fires again when the run goes on -- and `exc` is re-raised with the probe
        and location attached (raising: the C hook writes nothing)."""
        if self._handler_raised(p, "pre_handler", regs, exc):
            return 0
        addr = p.addr
        self.engine.set_reg("ip", addr)
        self._attach(exc, addr)
        self.core.curr_kprobe = None
        self.unlock()
        raise exc

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
        core = self.core
        if p is None:
            return self._not_ours(addr, flags)
        if self.status in _STEPPING:
            raise RuntimeError(f"kprobes: unrecoverable re-entry at "
                               f"{self.m.symbols.format(addr)} while single-stepping")
        # HIT_ACTIVE (a pre/fault handler) or HIT_SSDONE (a post handler; 2.6.13 disarmed
        # the probe for good here, later kernels treat it like ACTIVE): run the
        # instruction, none of p's handlers, and count the miss.
        self.clock.discount(1)
        self.n_int3 += 1
        self.save_previous_kprobe()
        self.set_current_kprobe(p, flags)
        for child in (p.children if p.is_aggregate else [p]):
            core.missed(child, "reentered")
        resume = self.prepare_singlestep(p, flags)
        self.status = KPROBE_REENTER
        return resume

    # -- debug ------------------------------------------------------------------------

    def post_kprobe_handler(self, vector, ip, flags):
        """#DB after the single-step (vector 1), ip and flags as trapped; returns the
        (ip, flags) to resume with to the C hook.  Like 2.6.13's post_kprobe_handler:

          1. the post_handler (not for a re-entered step), with regs.ip still in the slot;
          2. resume_execution() fixes ip (and the stack) for the original address;
          3. the trapped context's TF and IF come back (kprobe_saved_rflags);
          4. the per-CPU state is released, or the outer probe's restored after a
             re-entered step;
          5. still TF: the guest was single-stepping itself, its own #DB handler takes
             the trap.
        """
        if not self.running or self.status not in _STEPPING:
            return False                 # not ours: the guest's #DB
        core = self.core
        p = self.current_kprobe
        m = self.m
        self.n_debug += 1
        if m.observers:
            core.emit("trap", vector=1, ip=ip, probe=p)
        error = None
        if self.status != KPROBE_REENTER and p.post_handler is not None and not p.disabled:
            self.status = KPROBE_HIT_SSDONE
            regs = _regs_at_trap(self.engine, ip, flags)
            try:
                p.post_handler(p, regs, 0)
            except BaseException as exc:  # noqa: BLE001 - finish the step, then re-raise
                if not self._handler_raised(p, "post_handler", regs, exc):
                    error = exc
            core.curr_kprobe = None
            ip, flags = regs.trap_return()
        if p.resume_in_post_handler:
            # The old return-probe design's trampoline: its post handler has set ip to
            # the real return address (2.6.13 recognised it by comparing handlers).
            flags &= ~X86_EFLAGS_TF
        else:
            ip, flags = resume_execution(p.ainsn, p.addr, ip, flags, self.old_flags,
                                         self._read_sp, self._read_u64, self._write_u64)
        if m.observers:
            core.emit("fixup", probe=p, resume=p.ainsn.resume, ip=ip)
        flags |= self.saved_flags
        if self.status == KPROBE_REENTER:
            self.restore_previous_kprobe()
        else:
            self.unlock()
        if error is not None:
            self._raise_after_step(error, ip, flags)
        if flags & X86_EFLAGS_TF:
            return self._decline_debug(ip, flags)
        return ip, flags

    def _raise_after_step(self, error, ip, flags):
        """The step is finished and the state released: re-raise the post_handler's
        exception with the guest at (ip, flags) (raising: the hook writes nothing)."""
        self.engine.set_regs(_IP_FLAGS, (ip, flags))
        self._attach(error, ip)
        raise error

    def _decline_debug(self, ip, flags):
        """TF still set after the fix-up: the guest was single-stepping itself, and its
        own #DB handler takes this trap (declining: the machine reads ip and flags)."""
        self.engine.set_regs(_IP_FLAGS, (ip, flags))
        return False

    # -- faults -----------------------------------------------------------------------

    def kprobe_fault_handler(self, vector, ip, flags):
        """A fault while kprobes runs: the probe's fault_handler first; a fault in the
        stepped copy is then turned back into a fault of the original instruction."""
        if not self.running:
            return False
        core = self.core
        p = self.current_kprobe
        regs = _regs_at_trap(self.engine, ip, flags)
        core.rare_traps["fault"] += 1
        core.emit("trap", vector=vector, ip=ip, probe=p)
        handled = False
        if p.fault_handler is not None:
            try:
                handled = p.fault_handler(p, regs, vector)
            except BaseException as exc:
                self._handler_raised(p, "fault_handler", regs, exc)
                self._attach(exc, regs.ip)
                raise
        if handled:
            return regs.trap_return()
        if self.status & KPROBE_HIT_SS:
            # The copy faulted and did not complete (nothing was pushed): report the fault
            # at the original instruction, with the original flags.  Declining, so the
            # machine reads the CPU: write them here.
            regs.ip = p.addr + (regs.ip - p.ainsn.slot)
            regs.flags = (regs.flags & ~X86_EFLAGS_TF) | self.old_flags
            self.unlock()
            regs.flush()
        return False
