"""kprobes, x86_64: the instruction layer (like Linux's arch/x86/lib/insn.c and the pure
parts of arch/x86/kernel/kprobes/core.c) -- bytes in, decisions out, no machine:

  * decode(): instruction boundaries (capstone), what may be stepped out of line, and the
    resume action of each instruction, decided once at prepare time;
  * copy_for_slot(): arch_copy_kprobe, the copy for the slot with a %rip-relative disp32
    re-targeted;
  * resume_execution(): the fix-up after the single-step, on registers and a stack it is
    handed;
  * is_IF_modifier(), on_boundary(), direct_call_targets().

Differences from 2.6.13, each a later Linux fix: legacy prefixes are skipped before the
opcode is examined (2.6.13 skipped only REX, so `f3 c3` -- gcc's `repz ret` -- had its
absolute rip relocated); the 0xff indirect call/jmp test reads the ModRM reg field
(2.6.13 tested the opcode byte, so neither matched); instructions that cannot run out of
line are refused at registration (iret, int3, int n, into, hlt, and undecodable bytes)
instead of breaking the guest at the first hit.

Tested alone, without a machine (tests/unit/test_insn_x86_64.py).  Must not import: unicorn,
emu beyond the EFLAGS bits of emu.cpu, kprobes outside kprobes.arch.x86_64.
"""

import errno as _errno
import functools
from dataclasses import dataclass
from enum import IntEnum

from capstone import CS_ARCH_X86, CS_MODE_64, Cs, CsError
from capstone import x86_const as cx

from emu.cpu import X86_EFLAGS_IF, X86_EFLAGS_TF
from kprobes.arch.x86_64 import _trap

BREAKPOINT_INSTRUCTION = 0xCC
MAX_INSN_SIZE = 15

LEGACY_PREFIXES = frozenset((0x66, 0x67, 0x2E, 0x3E, 0x26, 0x64, 0x65, 0x36, 0xF0, 0xF3,
                             0xF2))


class Resume(IntEnum):
    """What resume_execution() does after the step (its cases).  The values are the C
    trap path's (trap.c), which reads them on every hit."""
    RELOCATE = _trap.RESUME_RELOCATE    # rip = orig + (rip - slot)
    PUSHF = _trap.RESUME_PUSHF          # fix the pushed flags image, then relocate
    RET = _trap.RESUME_RET              # rip is an absolute popped address: leave it
    CALL = _trap.RESUME_CALL            # fix the pushed return address, then relocate
    CALL_ABS = _trap.RESUME_CALL_ABS    # indirect call: fix the pushed return address, keep rip
    JMP_ABS = _trap.RESUME_JMP_ABS      # indirect jmp: keep rip
    REP = _trap.RESUME_REP              # rep string instruction: relocate (see rep_ends_by_count)


# The members resume_execution() compares with, as plain module names: an enum member's
# lookup on its class costs more than the whole fix-up of a relocated step.
_RET, _PUSHF = Resume.RET, Resume.PUSHF
_PUSHES_RETURN = (Resume.CALL, Resume.CALL_ABS)
_KEEPS_IP = (Resume.CALL_ABS, Resume.JMP_ABS)

# The string instructions a rep prefix repeats: ins, outs, movs, cmps, stos, lods, scas;
# cmps and scas also stop on ZF (repe: while ZF=1, repne: while ZF=0).
STRING_OPS = frozenset((0x6C, 0x6D, 0x6E, 0x6F, 0xA4, 0xA5, 0xA6, 0xA7, 0xAA, 0xAB, 0xAC,
                        0xAD, 0xAE, 0xAF))
ZF_STRING_OPS = frozenset((0xA6, 0xA7, 0xAE, 0xAF))
REP_PREFIXES = frozenset((0xF3, 0xF2))
X86_EFLAGS_ZF = 0x40


def rep_ends_by_count(ainsn, count_before, count_after, flags):
    """Whether the step of a rep string instruction (Resume.REP) was the iteration that
    ended it by its count: `count_before` and `count_after` are rCX (masked to the address
    size) before and after the step, `flags` the flags after.  The CPU single-steps a rep
    string instruction one iteration per #DB; the last one leaves rip past it.  Run
    unstepped (QEMU's icount translation, which kpemu's clock follows), an instruction
    that ends by its count takes one more count than its iterations -- the check of a
    zero count that exits -- while the stepped copy exits straight from its last
    iteration: that one count is the guest's and must be charged back.  An instruction
    entered with a zero count, or a cmps/scas stopped by ZF, exits at no extra count."""
    if count_before == 0 or count_after != 0:
        return False
    raw = ainsn.insn
    i = _opcode_index(raw)
    if raw[i] in ZF_STRING_OPS:
        repe = raw[:i].rfind(0xF3) > raw[:i].rfind(0xF2)
        # continued on ZF, so the count was what stopped it
        return bool(flags & X86_EFLAGS_ZF) == repe
    return True


def rep_count_mask(ainsn):
    """rCX's width for a rep string instruction: ECX with an address-size prefix."""
    raw = ainsn.insn
    return 0xFFFFFFFF if 0x67 in raw[:_opcode_index(raw)] else 0xFFFFFFFFFFFFFFFF


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


class InsnError(ValueError):
    """Bytes that cannot carry a probe; `.errno` is the errno registration returns."""

    def __init__(self, errno, message):
        super().__init__(message)
        self.errno = errno


@dataclass(slots=True)
class ArchInsn:
    """p.ainsn: the out-of-line copy and what resume_execution must do for it (slots: the
    C trap path reads slot, resume and if_modifier on every hit)."""
    slot: int            # address of the copy (0 until a slot is taken)
    length: int          # length of the original instruction
    insn: bytes          # the original instruction bytes
    copy: bytes          # what goes into the slot (rip-relative disp re-targeted)
    resume: Resume
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


def direct_call_targets(code, start):
    """Targets of the `call rel32` instructions in `code` decoded from `start`."""
    return {int(op_str, 16) for _a, _n, mnemonic, op_str in _cs_lite.disasm_lite(code, start)
            if mnemonic == "call" and op_str.startswith("0x")}


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


def decode(code, addr, length=None, text=None, ff_test_2613=False):
    """Decode the instruction at `addr` from `code` (its original bytes) and decide how it
    is copied and resumed.  Raises InsnError for what cannot be probed.  `length` and
    `text` (its size and disassembly at `addr`), when the caller has them already from
    FunctionInsns, spare the first decoding.

    `ff_test_2613`: decide the 0xff group as 2.6.13's resume_execution() did, by masking
    the opcode byte instead of the ModRM byte (`(0xff & 0x30) == 0x10` and the jmp tests
    never hold), so an indirect call or jmp is relocated like a plain instruction: rip
    becomes orig + (target - slot) and a call's pushed return address stays in the slot.
    Off by default; the fixups demo turns it on to show the bug."""
    if length is None:
        try:
            _a, length, mnem, op_str = next(_cs_lite.disasm_lite(code[:MAX_INSN_SIZE], addr, 1))
        except (StopIteration, CsError):
            raise InsnError(_errno.EILSEQ, f"no valid instruction at {addr:#x}") from None
        text = f"{mnem} {op_str}".strip()
    raw = bytes(code[:length])
    facts = _insn_facts(raw, ff_test_2613)
    if facts[0] is not None:
        errno, why = facts[0]
        raise InsnError(errno, why.format(addr=addr))
    _error, resume, if_modifier, riprel, disp_offset = facts
    return ArchInsn(0, length, raw, raw, resume, if_modifier, text, riprel, disp_offset)


@functools.lru_cache(maxsize=8192)
def _insn_facts(raw, ff_test_2613=False):
    """What decode() decides from an instruction's bytes alone (`raw` is exactly one
    instruction; nothing here depends on where it sits): (error, resume, if_modifier,
    riprel, disp_offset), error being None or (errno, message with an {addr} field).
    Cached: kernel text repeats its instructions (every prologue), and the detailed
    decoding is most of a registration's cost."""
    try:
        insn = next(_cs.disasm(raw, 0, 1))
    except (StopIteration, CsError):
        return ((_errno.EILSEQ, "no valid instruction at {addr:#x}"), None, False, False, 0)
    mnem = insn.mnemonic
    if mnem in NOT_STEPPABLE or mnem.startswith("int"):
        why = NOT_STEPPABLE.get(mnem, "software interrupts push the slot's address")
        return ((_errno.EINVAL, f"cannot probe '{mnem}' at {{addr:#x}}: {why}"),
                None, False, False, 0)
    if mnem in ("mov", "pop") and insn.operands and \
            insn.operands[0].type == cx.X86_OP_REG and insn.operands[0].reg == cx.X86_REG_SS:
        # A load of SS holds debug traps off for one more instruction, so the step would
        # run past the copy (Linux refuses these too: insn_masking_exception()).
        return ((_errno.EINVAL, f"cannot probe '{mnem} {insn.op_str}' at {{addr:#x}}: "
                 "a load of SS masks the single-step trap"), None, False, False, 0)
    i = _opcode_index(raw)
    op = raw[i]
    resume = Resume.RELOCATE
    if op == 0x9C:
        resume = Resume.PUSHF
    elif op in (0xC3, 0xCB, 0xC2, 0xCA):
        resume = Resume.RET
    elif op == 0xE8:
        resume = Resume.CALL
    elif op == 0xFF and i + 1 < len(raw) and not ff_test_2613:
        reg = (raw[i + 1] >> 3) & 7       # the ModRM reg field (the 2006 fix)
        if reg in (2, 3):
            resume = Resume.CALL_ABS
        elif reg in (4, 5):
            resume = Resume.JMP_ABS
    elif op == 0xEA:
        resume = Resume.JMP_ABS
    elif op in STRING_OPS and REP_PREFIXES & set(raw[:i]):
        resume = Resume.REP
    riprel = any(o.type == cx.X86_OP_MEM and o.mem.base == cx.X86_REG_RIP
                 for o in insn.operands)
    disp_offset = insn.disp_offset if riprel else 0
    if riprel and insn.disp_size != 4:
        return ((_errno.EINVAL, "rip-relative operand without a disp32 at {addr:#x}"),
                None, False, False, 0)
    return (None, resume, is_IF_modifier(raw), riprel, disp_offset)


class FunctionInsns:
    """The instructions of one function's original text, decoded once: where each
    starts, its length and disassembly -- what can_probe() checks a boundary against and
    prepare() takes the probed instruction's length from, however many probes the
    function gets."""

    __slots__ = ("start", "end", "insns", "code")

    def __init__(self, code, start):
        self.start = start
        self.code = bytes(code)     # the original bytes decoded
        self.insns = {}
        pos = start
        for address, length, mnem, op_str in _cs_lite.disasm_lite(code, start):
            self.insns[address] = (length, f"{mnem} {op_str}".strip())
            pos = address + length
        self.end = pos          # where decoding stopped (the end, or undecodable bytes)

    def on_boundary(self, addr):
        """on_boundary(code, start, addr) of the function's code."""
        return addr in self.insns or addr == self.end

    def at(self, addr):
        """(length, text) of the instruction starting at `addr`, or None."""
        return self.insns.get(addr)


def copy_for_slot(ainsn, addr, slot):
    """arch_copy_kprobe: the bytes for the slot at `slot`, a %rip-relative disp32
    re-targeted so it still reaches the original target (length cancels:
    orig+len+old = slot+len+new).  InsnError when the new displacement does not fit."""
    code = bytearray(ainsn.insn)
    disp_offset = ainsn.disp_offset
    if ainsn.riprel:
        old = int.from_bytes(code[disp_offset:disp_offset + 4], "little", signed=True)
        new = addr + old - slot
        if not -(1 << 31) <= new < (1 << 31):
            raise InsnError(_errno.EINVAL, f"rip-relative target of {addr:#x} is out of "
                            f"reach of the instruction slot at {slot:#x}")
        code[disp_offset:disp_offset + 4] = new.to_bytes(4, "little", signed=True)
    # Pad with int3: bytes after the copy are never executed with TF set; if something
    # went wrong they trap instead of running garbage.
    return bytes(code) + b"\xcc" * (MAX_INSN_SIZE - len(code))


def resume_execution(ainsn, probe_addr, ip, flags, old_flags, read_sp, read_u64, write_u64):
    """Fix the registers after the copy at ainsn.slot was single-stepped (like
    resume_execution() of 2.6.13 with the later fixes).  `ip` and `flags` are the trapped
    ones, the fixed (ip, flags) are returned; `read_sp()` gives the stack pointer and
    read_u64/write_u64 reach the stack (only the pushf and call cases need them).

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
    if resume == _RET:
        return ip, flags
    if resume == _PUSHF:
        sp = read_sp()
        image = read_u64(sp)
        write_u64(sp, (image & ~(X86_EFLAGS_TF | X86_EFLAGS_IF)) | old_flags)
    elif resume in _PUSHES_RETURN:
        sp = read_sp()
        write_u64(sp, probe_addr + (read_u64(sp) - slot))
    if resume not in _KEEPS_IP:
        ip = probe_addr + (ip - slot)
    return ip, flags
