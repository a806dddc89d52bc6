"""kprobe_args_syntax.tc: single arguments that a `p vfs_read ARG` line accepts or refuses.

GOODSYM is `_sdata` as in the selftest; SYMADDR its address.  The selftest's bad list runs
under `!`, which `set -e` ignores, so it never checked that Linux refuses them; here every
one must fail, and the code it fails with is pinned.
"""

import pytest

from emu.cpu import ALIASES, REG_NAMES
from kprobes.events import ProbeSyntaxError, parse_command

from .conftest import DATA

SYMADDR = f"{DATA:#x}"

GOOD = [
    "%ax",
    "@_sdata", f"@{SYMADDR}", "@_sdata+10", "@_sdata-10",
    "$stack", "$stack0", "$stack1",
    "$comm",
    "+0(%ax)", "-0(%ax)", "+10($stack)", "+0($stack1)", "+10(@_sdata-10)",
    "+0(+10(+20($stack)))",
    "varname=%ax",
    "%ax:x16",
    "$comm:string", "+0($stack):string",
]

BAD = [
    ("%ex", "BAD_REG_NAME"),
    ("@", "BAD_PROBE_ADDR"),                  # an empty symbol: ENOENT at registration
    ("@deaqswdefr", "BAD_PROBE_ADDR"),
    ("@_sdata*10", "BAD_PROBE_ADDR"),
    ("@_sdata/10", "BAD_PROBE_ADDR"),
    ("@_sdata%10", "BAD_PROBE_ADDR"),
    ("@_sdata&10", "BAD_PROBE_ADDR"),
    ("@_sdata|10", "BAD_PROBE_ADDR"),
    ("$stackp", "BAD_VAR"),
    ("$stack0+10", "BAD_VAR"),
    ("$stack1-10", "BAD_VAR"),
    ("+(%ax)", "BAD_DEREF_OFFS"),
    ("(%ax+10)", "BAD_FETCH_ARG"),
    ("-(%ax)", "BAD_DEREF_OFFS"),
    ("(%ax)", "BAD_FETCH_ARG"),
    ("+10($comm)", "COMM_CANT_DEREF"),
    ("+0(%ax)+10", "BAD_FETCH_ARG"),          # Linux drops the "+10"; refused here
    ("varname=varname2=%ax", "NOSUP_BTFARG"),
    ("%ax::x16", "BAD_TYPE"),
    ("%ax:y16", "BAD_TYPE"),
    ("x16:%ax", "BAD_TYPE"),
    ("$comm:x64", "NEED_STRING_TYPE"),
    ("$stack:string", "BAD_STRING"),
    ("%ax:string", "BAD_STRING"),
]


@pytest.mark.parametrize("arg", GOOD)
def test_good_arg(arg, ksyms):
    d = parse_command(f"p vfs_read {arg}", ksyms)
    assert d.canonical().endswith(f" {arg}" if "=" in arg else f" arg1={arg}")


@pytest.mark.parametrize("arg, code", BAD, ids=[a for a, _ in BAD])
def test_bad_arg(arg, code, ksyms):
    with pytest.raises(ProbeSyntaxError) as info:
        parse_command(f"p vfs_read {arg}", ksyms)
    assert info.value.code == code


def test_retval_only_on_return_probes(ksyms):
    assert parse_command("r vfs_read $retval", ksyms).args[0].code[0] == ("retval",)
    with pytest.raises(ProbeSyntaxError) as info:
        parse_command("p vfs_read $retval", ksyms)
    assert info.value.code == "RETVAL_ON_PROBE"


def test_symbol_args_resolve(ksyms):
    d = parse_command(f"p vfs_read a=@_sdata b=@{SYMADDR} c=@_sdata+10 d=@_sdata-10", ksyms)
    assert [a.code[:2] for a in d.args] == [
        [("symbol", "_sdata"), ("imm", DATA)],
        [("imm", DATA), ("st_mem", 0, 8)],
        [("symbol", "_sdata+10"), ("imm", DATA + 10)],
        [("symbol", "_sdata-10"), ("imm", DATA - 10)],
    ]


def test_register_names_are_the_pt_regs_table():
    """%REG takes the names of the one register table (emu.cpu.REG_NAMES, defined in C) and
    orig_ax -- exactly Linux's x86_64 regoffset_table -- and none of the table's aliases."""
    linux = {"r15", "r14", "r13", "r12", "r11", "r10", "r9", "r8", "bx", "cx", "dx", "si",
             "di", "bp", "ax", "orig_ax", "ip", "cs", "flags", "sp", "ss"}
    assert set(REG_NAMES) | {"orig_ax"} == linux
    for alias in ALIASES:
        with pytest.raises(ProbeSyntaxError) as info:
            parse_command(f"p vfs_read %{alias}")
        assert info.value.code == "BAD_REG_NAME"


def test_x86_register_names():
    """regoffset_table on x86_64: short names only."""
    for reg in ("ax", "bx", "cx", "dx", "si", "di", "bp", "sp", "ip", "flags", "cs", "ss",
                "orig_ax", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"):
        assert parse_command(f"p vfs_read %{reg}").args[0].code[0] == ("reg", reg)
    for reg in ("rax", "eax", "AX", "ds", "es", "fs", "gs", "r16"):
        with pytest.raises(ProbeSyntaxError) as info:
            parse_command(f"p vfs_read %{reg}")
        assert info.value.code == "BAD_REG_NAME"
