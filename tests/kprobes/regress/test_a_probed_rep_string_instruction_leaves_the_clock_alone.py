"""A kprobe on a rep string instruction (found by the Linux differential: memset-style
`rep stos` in vfs_write, do_sys_openat2, __schedule) fires once per iteration, as on real
hardware, and the guest's clock must still be the unprobed run's: run unstepped, an
instruction that ends by its count takes one count more than its iterations (the check of
the zero count that exits), the stepped copy exits straight from its last iteration, so
that one count is charged back.  Entered with a zero count, or a cmps/scas stopped by ZF,
it takes no extra count.  (End to end on Linux: tests/kprobes_linux/test_linux_differential.)"""

import pytest

from kprobes.arch.x86_64.insn import (X86_EFLAGS_ZF, Resume, decode, rep_count_mask,
                                      rep_ends_by_count)

ADDR = 0xFFFFFFFF81000000


@pytest.mark.parametrize("code, resume", [
    (b"\xf3\xab", Resume.REP),            # rep stos %eax, (%rdi)
    (b"\xf3\x48\xa5", Resume.REP),        # rep movsq
    (b"\xf3\xa6", Resume.REP),            # repe cmpsb
    (b"\xf2\xae", Resume.REP),            # repne scasb
    (b"\xab", Resume.RELOCATE),           # stos without a prefix
    (b"\xf3\xc3", Resume.RET),            # gcc's `repz ret` is a ret
    (b"\xf3\x90", Resume.RELOCATE),       # pause
])
def test_rep_string_instructions_are_told_apart(code, resume):
    assert decode(code + b"\x90" * 8, ADDR).resume == resume


def test_the_count_that_ends_it_is_charged_once():
    stos = decode(b"\xf3\xab" + b"\x90" * 8, ADDR)
    assert rep_ends_by_count(stos, 1, 0, 0)          # the last iteration
    assert not rep_ends_by_count(stos, 5, 4, 0)      # more to come
    assert not rep_ends_by_count(stos, 0, 0, 0)      # entered with nothing to do
    assert rep_count_mask(stos) == (1 << 64) - 1
    assert rep_count_mask(decode(b"\x67\xf3\xab" + b"\x90" * 8, ADDR)) == 0xFFFFFFFF


def test_cmps_and_scas_stopped_by_zf_take_no_extra_count():
    repe = decode(b"\xf3\xa6" + b"\x90" * 8, ADDR)
    repne = decode(b"\xf2\xae" + b"\x90" * 8, ADDR)
    assert rep_ends_by_count(repe, 1, 0, X86_EFLAGS_ZF)      # equal to the end: the count
    assert not rep_ends_by_count(repe, 1, 0, 0)             # a mismatch stopped it
    assert rep_ends_by_count(repne, 1, 0, 0)                # not found to the end
    assert not rep_ends_by_count(repne, 1, 0, X86_EFLAGS_ZF)  # found it
