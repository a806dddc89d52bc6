"""Interrupt and exception delivery through the guest's own IDT.

Unicorn never consults the guest IDT (notes, Q5): the host does what the CPU would do in
64-bit mode -- read the gate, align the stack to 16 bytes, push SS, RSP, RFLAGS, CS, RIP
(and the error code for vectors that have one), clear TF/NT/RF (and IF for an interrupt
gate), jump to the handler.  The guest's handler returns with iretq, which Unicorn executes.

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
HAS_ERROR_CODE = frozenset((8, 10, 11, 12, 13, 14, 17))


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
    if gate.ist:
        raise MachineError(f"{vector_name(vector)}: IST stacks are not modelled "
                           f"(gate {vector} asks for IST{gate.ist})")
    rflags = engine.reg("flags")
    rsp = engine.reg("sp")
    frame = [engine.reg("ss"), rsp, rflags, engine.reg("cs"), engine.reg("ip")]
    if error_code is not None:
        frame.append(error_code)
    new_sp = (rsp & ~0xF) - 8 * len(frame)
    mem.write(new_sp, struct.pack(f"<{len(frame)}Q", *reversed(frame)))
    rflags &= ~(X86_EFLAGS_TF | X86_EFLAGS_NT | X86_EFLAGS_RF)
    if gate.type == 0xE:
        rflags &= ~X86_EFLAGS_IF
    engine.set_reg("sp", new_sp)
    engine.set_reg("flags", rflags)
    engine.set_reg("ip", gate.offset)
