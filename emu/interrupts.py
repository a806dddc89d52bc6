"""Interrupt and exception delivery through the guest's own IDT.

Unicorn never consults the guest IDT (notes, Q5): the host does what the CPU would do in
64-bit mode -- read the gate, pick the stack (the interrupted one in ring 0; TSS.RSP0 when
the interrupt comes from ring 3, with SS null; the TSS's IST slot when the gate names one),
align it to 16 bytes, push SS, RSP, RFLAGS, CS, RIP (and the error code for vectors that
have one), clear TF/NT/RF (and IF for an interrupt gate), enter ring 0 with the gate's
code segment when coming from ring 3, jump to the handler.  The guest's handler returns
with iretq, which Unicorn executes (to ring 3 too).

Must not import: unicorn, kprobes.
"""

import struct

from emu._fastpath import CTrapHandler  # noqa: F401 - re-exported: a trap handler in C
from emu.cpu import X86_EFLAGS_IF, X86_EFLAGS_NT, X86_EFLAGS_RF, X86_EFLAGS_TF
from emu.errors import MachineError

VECTOR_NAMES = {
    0: "divide error", 1: "debug", 2: "NMI", 3: "int3", 4: "overflow", 5: "bounds",
    6: "invalid opcode", 7: "device not available", 8: "double fault",
    9: "coprocessor segment overrun", 10: "invalid TSS", 11: "segment not present",
    12: "stack segment", 13: "general protection fault", 14: "page fault",
    16: "x87 error", 17: "alignment check", 18: "machine check", 19: "SIMD error",
    20: "virtualization exception", 21: "control protection",
}
HAS_ERROR_CODE = frozenset((8, 10, 11, 12, 13, 14, 17, 21))
# Exceptions that are faults: the instruction did not complete, the frame's RIP is its own
# (traps -- #DB, int3, into -- and interrupts come after their instruction).
FAULTS = frozenset((0, 5, 6, 7, 10, 11, 12, 13, 14, 16, 17, 19, 20, 21))
TSS_RSP0 = 4                     # offsetof(struct x86_hw_tss, sp0)
TSS_IST1 = 0x24                  # offsetof(struct x86_hw_tss, ist[0])


def vector_name(vector):
    if vector in VECTOR_NAMES:
        return VECTOR_NAMES[vector]
    if 32 <= vector < 48:
        return f"IRQ{vector - 32}"
    return f"vector {vector:#x}"


class Gate:
    __slots__ = ("vector", "offset", "selector", "ist", "type", "present")

    def __init__(self, vector, raw):
        lo, sel, ist, attr, mid, hi, _ = struct.unpack("<HHBBHII", raw)
        self.vector = vector
        self.offset = lo | (mid << 16) | (hi << 32)
        self.selector = sel
        self.ist = ist & 7
        self.type = attr & 0xF
        self.present = bool(attr & 0x80)


def read_gate(engine, mem, vector):
    base, limit = engine.table_reg("idtr")
    if vector * 16 + 15 > limit:
        raise MachineError(f"{vector_name(vector)}: vector {vector} beyond the IDT limit "
                           f"{limit:#x}")
    return Gate(vector, mem.read(base + vector * 16, 16))


def deliver(engine, mem, vector, error_code=None):
    """Enter the guest's handler for `vector`, as the CPU does at an instruction boundary.
    The return address is the current RIP.  Raises MachineError when the gate is unusable
    (which on hardware would be a double fault)."""
    gate = read_gate(engine, mem, vector)
    if not gate.present:
        raise MachineError(f"{vector_name(vector)}: IDT gate {vector} not present")
    if gate.type not in (0xE, 0xF):
        raise MachineError(f"{vector_name(vector)}: IDT gate {vector} has type "
                           f"{gate.type:#x}, not a 64-bit interrupt or trap gate")
    ss, rsp, rflags, cs, rip = engine.regs(("ss", "sp", "flags", "cs", "ip"))
    from_user = cs & 3
    stack = rsp
    if gate.ist or from_user:
        tss = engine.tr_base()
        stack = mem.u64(tss + TSS_IST1 + 8 * (gate.ist - 1)) if gate.ist else \
            mem.u64(tss + TSS_RSP0)
    frame = [ss, rsp, rflags, cs, rip]
    if error_code is not None:
        frame.append(error_code)
    new_sp = (stack & ~0xF) - 8 * len(frame)
    mem.write(new_sp, struct.pack(f"<{len(frame)}Q", *reversed(frame)))
    rflags &= ~(X86_EFLAGS_TF | X86_EFLAGS_NT | X86_EFLAGS_RF)
    if gate.type == 0xE:
        rflags &= ~X86_EFLAGS_IF
    if from_user:
        engine.enter_ring0(gate.selector, gdt_flags(engine, mem, gate.selector), 0, 0)
    engine.set_regs(("sp", "flags", "ip"), (new_sp, rflags, gate.offset))


def gdt_flags(engine, mem, selector):
    """The high dword of the GDT descriptor `selector` names (its type, DPL, L/D bits):
    what the CPU loads into the segment cache."""
    base, limit = engine.table_reg("gdtr")
    if (selector | 7) > limit:
        raise MachineError(f"selector {selector:#x} beyond the GDT limit {limit:#x}")
    return struct.unpack("<I", mem.read(base + (selector & ~7) + 4, 4))[0]
