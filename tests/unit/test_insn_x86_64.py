"""The x86_64 instruction layer alone (kprobes/arch/x86_64/insn.py): bytes in, decisions
out, no machine -- like Linux's insn decoder self-tests.  Addresses are in the kernel text
range; the bytes are assembled by hand and named beside each case."""

import errno

import pytest

from kprobes.arch.x86_64 import _trap
from kprobes.arch.x86_64.insn import (MAX_INSN_SIZE, FunctionInsns, InsnError, Resume,
                                      copy_for_slot, decode, direct_call_targets,
                                      is_IF_modifier, on_boundary, resume_execution)

TEXT = 0xFFFFFFFF81000000
TF, IF = 0x100, 0x200

DECODED = [
    # (bytes, resume action, IF modifier, text)
    ("55", Resume.RELOCATE, False, "push rbp"),
    ("9c", Resume.PUSHF, False, "pushfq"),
    ("c3", Resume.RET, False, "ret"),
    ("f3c3", Resume.RET, False, "repz ret"),        # a legacy prefix before the opcode
    ("c20800", Resume.RET, False, "ret 8"),
    ("e800000000", Resume.CALL, False, f"call {TEXT + 5:#x}"),
    ("ffd0", Resume.CALL_ABS, False, "call rax"),    # ModRM reg field 2
    ("ff10", Resume.CALL_ABS, False, "call qword ptr [rax]"),
    ("ffe0", Resume.JMP_ABS, False, "jmp rax"),      # ModRM reg field 4
    ("ff20", Resume.JMP_ABS, False, "jmp qword ptr [rax]"),
    ("ffc0", Resume.RELOCATE, False, "inc eax"),     # 0xff, but reg field 0
    ("7405", Resume.RELOCATE, False, f"je {TEXT + 7:#x}"),
    ("fa", Resume.RELOCATE, True, "cli"),
    ("fb", Resume.RELOCATE, True, "sti"),
    ("9d", Resume.RELOCATE, True, "popfq"),
]


@pytest.mark.parametrize("hexbytes, resume, if_modifier, text", DECODED,
                         ids=[row[3] for row in DECODED])
def test_decode_decides_the_resume_action(hexbytes, resume, if_modifier, text):
    ainsn = decode(bytes.fromhex(hexbytes) + b"\x90" * 8, TEXT)
    assert (ainsn.resume, ainsn.if_modifier, ainsn.text) == (resume, if_modifier, text)
    assert ainsn.length == len(hexbytes) // 2 and ainsn.insn == bytes.fromhex(hexbytes)
    assert not ainsn.riprel


@pytest.mark.parametrize("hexbytes, fixed", [
    ("ffd0", Resume.CALL_ABS), ("ff10", Resume.CALL_ABS), ("ffe0", Resume.JMP_ABS),
    ("ff20", Resume.JMP_ABS), ("41ffd3", Resume.CALL_ABS),   # call *%r11: REX first
])
def test_ff_test_2613_relocates_indirect_calls_and_jmps(hexbytes, fixed):
    code = bytes.fromhex(hexbytes) + b"\x90" * 8
    assert decode(code, TEXT).resume == fixed
    assert decode(code, TEXT, ff_test_2613=True).resume == Resume.RELOCATE


def test_ff_test_2613_leaves_the_other_opcodes_alone():
    for hexbytes, resume, _if, _text in DECODED:
        if not hexbytes.startswith("ff"):
            code = bytes.fromhex(hexbytes) + b"\x90" * 8
            assert decode(code, TEXT, ff_test_2613=True).resume == resume


def test_resume_values_are_the_c_paths():
    assert [(r.name, int(r)) for r in Resume] == [
        (name, getattr(_trap, "RESUME_" + name))
        for name in ("RELOCATE", "PUSHF", "RET", "CALL", "CALL_ABS", "JMP_ABS", "REP")]


@pytest.mark.parametrize("hexbytes, err", [
    ("cc", errno.EINVAL),            # int3
    ("cd80", errno.EINVAL),          # int $0x80
    ("48cf", errno.EINVAL),          # iretq
    ("f4", errno.EINVAL),            # hlt
    ("0f05", errno.EINVAL),          # syscall
    ("8ed0", errno.EINVAL),          # mov %eax,%ss
    ("17", errno.EILSEQ),            # pop %ss: no such instruction in 64-bit mode
])
def test_what_cannot_be_stepped_out_of_line(hexbytes, err):
    with pytest.raises(InsnError) as exc:
        decode(bytes.fromhex(hexbytes) + b"\x90" * 8, TEXT)
    assert exc.value.errno == err


def test_is_IF_modifier_skips_prefixes():  # noqa: N802 - Linux's name
    assert is_IF_modifier(bytes.fromhex("489d"))      # REX.W popfq
    assert not is_IF_modifier(bytes.fromhex("669c"))  # pushf with an operand-size prefix


def test_rip_relative_copy_out_of_reach_is_refused():
    code = bytes.fromhex("488b0500100000")        # mov 0x1000(%rip),%rax
    ainsn = decode(code, TEXT)
    assert ainsn.riprel and ainsn.disp_offset == 3
    near = copy_for_slot(ainsn, TEXT, TEXT + 0x200000)
    assert int.from_bytes(near[3:7], "little", signed=True) == 0x1000 - 0x200000
    assert len(near) == MAX_INSN_SIZE and near[7:] == b"\xcc" * 8
    with pytest.raises(InsnError) as exc:
        copy_for_slot(ainsn, TEXT, TEXT - 2**32)
    assert exc.value.errno == errno.EINVAL


def test_on_boundary():
    code = bytes.fromhex("554889e5b805000000c3")  # push rbp; mov rbp,rsp; mov eax,5; ret
    assert [a - TEXT for a in range(TEXT, TEXT + 11) if on_boundary(code, TEXT, a)] == \
        [0, 1, 4, 9, 10]


def test_function_insns_agree_with_on_boundary():
    # push rbp; mov rbp,rsp; mov eax,5; ret; ud2; then 06 (push es), no instruction in
    # 64-bit mode: decoding stops there, as on_boundary's does.
    code = bytes.fromhex("554889e5b805000000c3" "0f0b" "0690")
    insns = FunctionInsns(code, TEXT)
    assert [a - TEXT for a in range(TEXT, TEXT + len(code) + 1) if insns.on_boundary(a)] == \
        [a - TEXT for a in range(TEXT, TEXT + len(code) + 1) if on_boundary(code, TEXT, a)] == \
        [0, 1, 4, 9, 10, 12]
    assert insns.at(TEXT + 4) == (5, "mov eax, 5") and insns.at(TEXT + 5) is None


@pytest.mark.parametrize("hexbytes", [row[0] for row in DECODED] + ["488b0510000000", "8ed0"],
                         ids=[row[3] for row in DECODED] + ["riprel mov", "mov ss"])
def test_decode_with_the_length_known_is_decode(hexbytes):
    """prepare() hands decode() the length and text FunctionInsns found: the same result
    (or the same error) as decoding from scratch, at any address."""
    code = bytes.fromhex(hexbytes) + b"\x90" * 8
    for addr in (TEXT, TEXT + 0x1234):
        length, text = FunctionInsns(code, addr).at(addr)
        try:
            want = decode(code, addr)
        except InsnError as exc:
            with pytest.raises(InsnError) as again:
                decode(code, addr, length, text)
            assert (again.value.errno, str(again.value)) == (exc.errno, str(exc))
        else:
            assert decode(code, addr, length, text) == want


def test_direct_call_targets():
    code = bytes.fromhex("e800000000" "ffd0" "e8f6ffffff")   # call +0; call rax; call -10
    assert direct_call_targets(code, TEXT) == {TEXT + 5, TEXT + 7 - 10 + 5}


class Stack:
    def __init__(self, sp, words):
        self.sp, self.words = sp, dict(words)

    def read_sp(self):
        return self.sp

    def read_u64(self, addr):
        return self.words[addr]

    def write_u64(self, addr, value):
        self.words[addr] = value


SLOT = 0xFFFFFFFFA0000000
SP = 0xFFFF888000010000


@pytest.mark.parametrize("hexbytes, ip_after, stack_before, want_ip, stack_after", [
    # relocate: jcc taken from the slot lands relative to the original
    ("7405", SLOT + 7, {}, TEXT + 7, {}),
    # ret: the popped address is absolute
    ("c3", 0xFFFFFFFF81234567, {}, 0xFFFFFFFF81234567, {}),
    # call rel32: the pushed return address is fixed, ip relocated
    ("e800000000", SLOT + 5, {SP: SLOT + 5}, TEXT + 5, {SP: TEXT + 5}),
    # indirect call: the pushed return address is fixed, ip kept
    ("ffd0", 0xFFFFFFFF81555555, {SP: SLOT + 2}, 0xFFFFFFFF81555555, {SP: TEXT + 2}),
    # indirect jmp: ip kept, the stack untouched
    ("ffe0", 0xFFFFFFFF81555555, {SP: 7}, 0xFFFFFFFF81555555, {SP: 7}),
    # pushf: the pushed image gets the original TF and IF back
    ("9c", SLOT + 1, {SP: TF | 0x42}, TEXT + 1, {SP: IF | 0x42}),
])
def test_resume_execution_rows(hexbytes, ip_after, stack_before, want_ip, stack_after):
    ainsn = decode(bytes.fromhex(hexbytes) + b"\x90" * 8, TEXT)
    ainsn.slot = SLOT
    stack = Stack(SP, stack_before)
    ip, flags = resume_execution(ainsn, TEXT, ip_after, TF | 0x46, IF, stack.read_sp,
                                 stack.read_u64, stack.write_u64)
    assert (ip, flags) == (want_ip, 0x46)            # TF cleared, nothing else touched
    assert stack.words == stack_after
