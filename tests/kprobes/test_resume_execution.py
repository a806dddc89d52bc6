"""One test per resume_execution() row: the instruction is single-stepped out of line in
its slot and the guest gets exactly the result it gets unprobed."""

import pytest

from emu import GuestFault
from kprobes import Kprobe
from kprobes.arch.x86_64.insn import Resume

ROWS = [
    # (function, args, expected result, resume action)
    ("t_call_rel32", (), 0, Resume.CALL),
    ("t_ret_imm16", (3, 4), 7, Resume.RET),
    ("t_jcc", (1, 2), 1, Resume.RELOCATE),          # taken
    ("t_jcc", (3, 2), 2, Resume.RELOCATE),          # not taken
    ("t_loop", (10,), 55, Resume.RELOCATE),
    ("t_pushf", (), 0x200, Resume.PUSHF),
    ("t_cli", (), 0, Resume.RELOCATE),
    ("t_sti", (), 0x200, Resume.RELOCATE),
    ("t_popf", (0x202,), 0x200, Resume.RELOCATE),
    ("t_popf", (0x2,), 0, Resume.RELOCATE),
    ("t_riprel_load", (), 0x1122334455667788, Resume.RELOCATE),
    ("t_riprel_store", (0x5A5A,), 0x5A5A, Resume.RELOCATE),
    ("t_riprel_lea", (), "t_cell", Resume.RELOCATE),
    ("t_call_reg", (), 223, Resume.CALL_ABS),
    ("t_call_mem", (0,), 112, Resume.CALL_ABS),
    ("t_call_mem", (1,), 223, Resume.CALL_ABS),
    ("t_jmp_reg", (), 111, Resume.JMP_ABS),
    ("t_jmp_mem", (1,), 222, Resume.JMP_ABS),
]


@pytest.mark.parametrize("func, args, expected, resume", ROWS,
                         ids=[f"{r[0]}{list(r[1])}" for r in ROWS])
def test_probed_instruction_gives_the_unprobed_result(km, resume_targets_o, func, args,
                                                      expected, resume):
    m, k = km
    m.load_module(resume_targets_o)
    if expected == "t_cell":
        expected = m.symbols.lookup_name("t_cell")
    regs_before = m.regs_dict()
    unprobed = m.call(func, *args)
    calls = []
    insn = m.symbols.lookup_name(func + "_insn")
    p = Kprobe(addr=insn,
               pre_handler=lambda p, regs: calls.append(("pre", regs.ip)) or 0,
               post_handler=lambda p, regs, flags: calls.append(("post", regs.ip, flags)))
    k.register_kprobe(p)
    assert p.ainsn.resume == resume
    probed = m.call(func, *args)
    assert probed == unprobed == expected
    hits = 10 if func == "t_loop" else 1    # the loop instruction runs 10 times
    assert [c[0] for c in calls] == ["pre", "post"] * hits
    assert {c[1] for c in calls[0::2]} == {insn + 1}   # pre: ip just after the int3
    assert {c[2] for c in calls[1::2]} == {0}          # post: flags is always 0
    assert k.traps["int3"] == hits and k.traps["debug"] == hits
    assert m.regs_dict() == regs_before
    assert p.nmissed == 0


def test_call_rel32_post_handler_sees_ip_inside_the_slot(km, resume_targets_o):
    """2.6.13: the post_handler runs before resume_execution, so it sees the slot."""
    m, k = km
    m.load_module(resume_targets_o)
    seen = {}

    def post(p, regs, flags):
        seen["ip"] = regs.ip
        seen["ret"] = m.read_u64(regs.sp)

    p = Kprobe(symbol_name="t_call_rel32_insn", post_handler=post)
    k.register_kprobe(p)
    assert m.call("t_call_rel32") == 0
    target = m.symbols.lookup_name("ret_addr_of_caller")
    # A call in the slot lands at the real target (rel32 is re-relocated afterwards) ...
    assert seen["ip"] == p.ainsn.slot + 5 + (target - (p.addr + 5))
    # ... and pushed the slot's return address, which resume_execution then fixes.
    assert seen["ret"] == p.ainsn.slot + 5


def test_pushf_image_never_leaks_tf(km, resume_targets_o):
    m, k = km
    m.load_module(resume_targets_o)
    k.register_kprobe(Kprobe(symbol_name="t_pushf_insn"))
    assert m.call("t_pushf") & 0x100 == 0


def test_jump_table_in_the_kernel(km):
    """mix_switch's `jmp *table(,%rdi,8)`: an indirect jmp through memory."""
    from capstone import CS_ARCH_X86, CS_MODE_64, Cs

    m, k = km
    fn = m.symbols.get("mix_switch")
    code = m.read(fn.addr, fn.size)
    jmp = next(i for i in Cs(CS_ARCH_X86, CS_MODE_64).disasm(code, fn.addr)
               if i.mnemonic == "jmp" and i.op_str.startswith("qword ptr"))
    unprobed = [m.call("mix_switch", i, 1000 + i) for i in range(12)]
    p = Kprobe(addr=jmp.address, pre_handler=lambda p, r: 0)
    k.register_kprobe(p)
    assert p.ainsn.resume == Resume.JMP_ABS
    assert [m.call("mix_switch", i, 1000 + i) for i in range(12)] == unprobed
    assert k.traps["int3"] == 11      # cases 0..10 go through the table, 11 is the default


def test_ff_test_2613_reproduces_the_indirect_call_bug(km, resume_targets_o):
    """With the arch's ff_test_2613 on, `call *%rdx` is relocated as 2.6.13 did: ip lands
    at orig + (target - slot) instead of the target, and the pushed return address stays
    in the slot.  Off again, the next probe is fixed up right."""
    m, k = km
    m.load_module(resume_targets_o)
    insn = m.symbols.lookup_name("t_call_reg_insn")
    target = m.symbols.lookup_name("ind_two")
    seen = []

    def post(p, regs, flags):
        seen.append((regs.ip, m.read_u64(regs.sp)))

    k.arch.ff_test_2613 = True
    p = Kprobe(addr=insn, post_handler=post)
    k.register_kprobe(p)
    k.arch.ff_test_2613 = False
    assert p.ainsn.resume == Resume.RELOCATE
    slot = p.ainsn.slot
    with pytest.raises(GuestFault, match="did not return within 200 instructions"):
        m.call("t_call_reg", max_insns=200)
    assert seen == [(target, slot + 2)]          # the step itself is the same
    assert k.traps["int3"] == 1 and k.traps["debug"] == 1
    k.unregister_kprobe(p)
    p = Kprobe(addr=insn)
    k.register_kprobe(p)
    assert p.ainsn.resume == Resume.CALL_ABS
    assert m.call("t_call_reg") == 223
