"""Regression: a probe on a 0xCC byte inside another instruction (a displacement) was
refused with EINVAL "an int3 is already there" -- the foreign-int3 check ran before the
instruction-boundary check, which Linux runs first (can_probe(): EILSEQ)."""

import errno

import pytest
from capstone import CS_ARCH_X86, CS_MODE_64, Cs

from kprobes import Kprobe, KprobeError


def test_a_cc_in_a_displacement(km):
    m, k = km
    fn = m.symbols.get("do_fork")
    insn = next(i for i in Cs(CS_ARCH_X86, CS_MODE_64).disasm(m.read(fn.addr, fn.size),
                                                               fn.addr)
                if 0xCC in bytes(i.bytes)[1:])
    inside = insn.address + bytes(insn.bytes).index(0xCC, 1)
    assert m.read(inside, 1) == b"\xcc"
    with pytest.raises(KprobeError, match="not an instruction boundary") as exc:
        k.register_kprobe(Kprobe(addr=inside))
    assert exc.value.errno == errno.EILSEQ
    k.register_kprobe(Kprobe(addr=insn.address))     # its own first byte is fine
