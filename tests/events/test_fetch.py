"""Fetching and printing arguments against a fake probe context: types, truncation, sign,
bitfields, chars, strings, arrays, symbols, faults, $stack/$arg/$retval/$comm."""

import pytest

from kprobes.events import FAULT, format_args, parse_command
from kprobes.events.trace_probe import print_probe_args

from .conftest import DATA, SP, STACK_TOP, TEXT

BUF = 0xFFFF888000100000          # a mapped page for pointed-to data


@pytest.fixture
def buf(mem):
    mem.write(BUF, bytes(range(1, 65)))
    return BUF


def show(ctx, command, symbols=True):
    d = parse_command(command, ctx.symbols if symbols else None)
    return format_args(d, ctx)


TYPES_OF_MINUS_TWO = [
    ("u8", "254"), ("u16", "65534"), ("u32", "4294967294"), ("u64", "18446744073709551614"),
    ("s8", "-2"), ("s16", "-2"), ("s32", "-2"), ("s64", "-2"),
    ("x8", "0xfe"), ("x16", "0xfffe"), ("x32", "0xfffffffe"), ("x64", "0xfffffffffffffffe"),
]

TYPES_OF_PATTERN = [
    ("u8", "239"), ("u16", "52719"), ("u32", "2427178479"), ("u64", "1311768467294899695"),
    ("s8", "-17"), ("s16", "-12817"), ("s32", "-1867788817"), ("s64", "1311768467294899695"),
    ("x8", "0xef"), ("x16", "0xcdef"), ("x32", "0x90abcdef"), ("x64", "0x1234567890abcdef"),
]


@pytest.mark.parametrize("t, text", TYPES_OF_MINUS_TWO)
def test_register_types_negative(ctx, t, text):
    ctx.regs.ax = (-2) & (1 << 64) - 1
    assert show(ctx, f"p vfs_read v=%ax:{t}") == f" v={text}"


@pytest.mark.parametrize("t, text", TYPES_OF_PATTERN)
def test_register_types_truncate(ctx, t, text):
    ctx.regs.ax = 0x1234567890ABCDEF
    assert show(ctx, f"p vfs_read v=%ax:{t}") == f" v={text}"


@pytest.mark.parametrize("t, text", TYPES_OF_PATTERN)
def test_memory_types_read_their_size(ctx, mem, t, text):
    mem.u64(BUF, 0x1234567890ABCDEF)
    mem.write(BUF + 8, b"\xff" * 8)          # bytes past the type's size must not leak in
    ctx.regs.di = BUF
    assert show(ctx, f"p vfs_read v=+0(%di):{t}") == f" v={text}"


def test_default_type_is_x64(ctx):
    ctx.regs.ax = 0x2A
    assert show(ctx, "p vfs_read %ax") == " arg1=0x2a"


def test_offsets_and_nesting(ctx, mem, buf):
    mem.u64(BUF + 0x100, BUF + 0x200)
    mem.u64(BUF + 0x208, 0x1122334455667788)
    ctx.regs.di = BUF + 0x110
    assert show(ctx, "p vfs_read a=-16(%di):x64 b=+8(-16(%di)):x64 c=-12(%di):u8") == \
        " a=0xffff888000100200 b=0x1122334455667788 c=128"


@pytest.mark.parametrize("arg", ["+0(%ax)", "+0(%ax):u8", "+8(+0(%ax)):s32", "+0(%ax):string",
                                 "+0(%ax):char", "+0(%ax):symbol", "+0(%ax):symstr"])
def test_fault(ctx, arg):
    ctx.regs.ax = 0xDEAD0000
    assert show(ctx, f"p vfs_read v={arg}") == " v=(fault)"


BITFIELDS = [
    ("b3@1/8", 0xB6, "3"), ("b4@4/8", 0xB6, "11"), ("b1@7/8", 0xB6, "1"), ("b8@0/8", 0xB6, "182"),
    ("b4@8/16", 0xABCD, "11"), ("b12@4/16", 0xABCD, "2748"),
    ("b5@27/32", 0xF8000000, "31"), ("b32@32/64", 0xDEADBEEF00000000, "3735928559"),
    ("b1@0/64", 0xFFFFFFFFFFFFFFFF, "1"), ("b64@0/64", 0xFFFFFFFFFFFFFFFF, "18446744073709551615"),
]


@pytest.mark.parametrize("bf, value, text", BITFIELDS)
def test_bitfields(ctx, mem, bf, value, text):
    size = int(bf.split("/")[1]) // 8
    mem.write(BUF, value.to_bytes(size, "little"))
    ctx.regs.di = BUF
    ctx.regs.ax = value
    assert show(ctx, f"p vfs_read m=+0(%di):{bf} r=%ax:{bf}") == f" m={text} r={text}"


def test_bitfield_container_is_unsigned_type(ctx):
    d = parse_command("p vfs_read v=%ax:b4@0/32")
    assert d.args[0].type.name == "u32"


def test_char_and_char_array(ctx, mem):
    mem.write(BUF, b"abc\x00")
    ctx.regs.di = BUF
    assert show(ctx, "p vfs_read c=+0(%di):char s=+0(%di):char[3]") == " c='a' s={'a','b','c'}"


def test_arrays(ctx, mem, buf):
    """TYPE[1] holds what TYPE holds, but prints in braces like any array."""
    ctx.regs.di = BUF
    assert show(ctx, "p vfs_read a=+0(%di):u8[4] b=+0(%di):x16[2] c=+2(%di):s32[1]") == \
        " a={1,2,3,4} b={0x201,0x403} c={100992003}"


def test_array_element_that_faults(ctx, mem):
    mem.write(BUF, b"\x01\x02")
    ctx.regs.di = BUF
    assert show(ctx, "p vfs_read a=+0(%di):u8[4]") == " a={1,2,(fault),(fault)}"


def test_strings(ctx, mem):
    mem.write(BUF, b"hello\x00")
    mem.write(DATA + 0x40, b"jiffies text\x00")
    ctx.regs.di = BUF
    assert show(ctx, 'p vfs_read s=+0(%di):string t=+2(%di):string c=$comm i=\\"imm_str" '
                     'j=@jiffies:string') == \
        ' s="hello" t="llo" c="bash" i="imm_str" j="jiffies text"'


def test_string_stops_at_nul_before_unmapped_memory(ctx, mem):
    start = BUF + 4096 - 3
    mem.write(start, b"ab\x00")                  # the next page is not mapped
    ctx.regs.di = start
    assert show(ctx, "p vfs_read s=+0(%di):string") == ' s="ab"'
    mem.write(start, b"abc")                     # no NUL before the hole: the read faults
    assert show(ctx, "p vfs_read s=+0(%di):string") == " s=(fault)"


def test_string_is_at_most_4095_characters(ctx, mem):
    mem.write(BUF, b"x" * 5000)
    ctx.regs.di = BUF
    out = show(ctx, "p vfs_read s=+0(%di):string")
    assert out == ' s="' + "x" * 4095 + '"'


def test_string_array_is_array_of_pointers(ctx, mem):
    mem.write(BUF + 0x100, b"one\x00")
    mem.write(BUF + 0x200, b"two\x00")
    mem.u64(BUF, BUF + 0x100)
    mem.u64(BUF + 8, BUF + 0x200)
    mem.u64(BUF + 16, 0xDEAD0000)
    ctx.regs.di = BUF
    assert show(ctx, "p vfs_read a=+0(%di):string[3] b=+0(+0(%di)):string") == \
        ' a={"one","two",(fault)} b="one"'


def test_immediates(ctx):
    assert show(ctx, "p vfs_read a=\\123 b=\\-1 c=\\-1:s32 d=\\0x10:u8 e=\\+7:s8") == \
        " a=0x7b b=0xffffffffffffffff c=-1 d=16 e=7"


def test_symbol_and_symstr(ctx):
    ctx.regs.ip = TEXT + 0x1001
    ctx.regs.ax = 0x1234
    assert show(ctx, "p vfs_read a=%ip:symbol b=%ip:symstr c=%ax:symbol") == \
        ' a=vfs_read+0x1/0x100 b="vfs_read+0x1/0x100" c=0x1234'


def test_symbol_without_kallsyms_prints_hex(ctx):
    d = parse_command("p vfs_read a=%ip:symbol")
    assert print_probe_args(d.args, d.fetch_args(ctx), None) == f" a=0x{TEXT + 0x1001:x}"


def test_stack(ctx, mem):
    mem.u64(SP, 0xAAAA)
    mem.u64(SP + 8, 0xBBBB)
    assert show(ctx, "p vfs_read $stack $stack0 $stack1 +8($stack)") == \
        f" arg1=0x{SP:x} arg2=0xaaaa arg3=0xbbbb arg4=0xbbbb"


def test_stack_outside_the_thread_stack_is_zero(ctx, mem):
    """$stackN reads only inside the THREAD_SIZE-aligned stack holding sp."""
    mem.u64(STACK_TOP, 0x5555)                   # mapped, but the next stack
    n = (STACK_TOP - SP) // 8
    assert show(ctx, f"p vfs_read a=$stack{n - 1} b=$stack{n}") == " a=0x0 b=0x0"


def test_entry_arguments(ctx, mem):
    regs = ctx.regs
    regs.di, regs.si, regs.dx, regs.cx, regs.r8, regs.r9 = 1, 2, 3, 4, 5, 6
    mem.u64(SP, 0xFFFFFFFF81001234)      # the return address
    mem.u64(SP + 8, 7)
    mem.u64(SP + 16, 8)
    assert show(ctx, "p vfs_read " + " ".join(f"$arg{n}:u8" for n in range(1, 9))) == \
        "".join(f" arg{n}={n}" for n in range(1, 9))


def test_return_probe_values(ctx):
    """$retval is the return value; $argN in a return probe is the value saved at entry."""
    d = parse_command("r vfs_read rv=$retval:s32 a=$arg2 c=$comm", ctx.symbols)
    assert d.entry_arg_count == 2
    ctx.regs.di, ctx.regs.si = 0x10, 0x20
    ctx.entry_args = d.capture_entry_args(ctx)          # at entry
    assert ctx.entry_args == [0x10, 0x20]
    ctx.regs.si = 0x99                                  # clobbered before the return
    ctx.retval = (-14) & (1 << 64) - 1
    assert format_args(d, ctx) == ' rv=-14 a=0x20 c="bash"'
    ctx.retval = None                                   # falls back to regs->ax
    ctx.regs.ax = 3
    assert format_args(d, ctx).startswith(" rv=3 ")


def test_entry_args_missing_is_a_fault(ctx):
    d = parse_command("r vfs_read a=$arg1")
    assert d.fetch_args(ctx) == [FAULT]


def test_data_symbol_resolved_late(ctx, mem):
    """Parsed without kallsyms, @SYM is resolved from ctx.symbols when fetched."""
    mem.u64(DATA + 0x40, 77)
    d = parse_command("p vfs_read j=@jiffies:u64 n=@nothere")
    assert format_args(d, ctx) == " j=77 n=(fault)"


def test_current(ctx):
    ctx.current = 0xFFFF888000001000
    assert show(ctx, "p vfs_read t=$current") == " t=0xffff888000001000"
    del ctx.current
    assert show(ctx, "p vfs_read t=$current") == " t=(fault)"


def test_orig_ax_of_an_int3_hit(ctx):
    assert show(ctx, "p vfs_read o=%orig_ax:s64") == " o=-1"
