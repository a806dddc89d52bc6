"""Whole kprobe_events lines: read-back, generated names, maxactive, %return, deletion, and
the trace line a hit prints."""

import errno

import pytest

from kprobes.events import (DeleteCommand, ProbeCommandError, ProbeSyntaxError,
                            format_probe_ip, format_retprobe_ip, format_trace_line, irq_flags,
                            parse_command, split_commands)

from .conftest import TEXT

READ_BACK = [
    ("p:myprobe do_sys_open dfd=%ax filename=%dx flags=%cx mode=+4($stack)",
     "p:kprobes/myprobe do_sys_open dfd=%ax filename=%dx flags=%cx mode=+4($stack)"),
    ("r:myretprobe do_sys_open $retval", "r:kprobes/myretprobe do_sys_open arg1=$retval"),
    ("r4:kprobes/myretprobe do_sys_open ret=$retval",
     "r4:kprobes/myretprobe do_sys_open ret=$retval"),
    ("p:testprobe vfs_read $stack $stack0 +0($stack)",
     "p:kprobes/testprobe vfs_read arg1=$stack arg2=$stack0 arg3=+0($stack)"),
    ("p vfs_read+0", "p:kprobes/p_vfs_read_0 vfs_read"),
    ("p vfs_read+0x10", "p:kprobes/p_vfs_read_16 vfs_read+16"),
    ("p 0xffffffff81001000", "p:kprobes/p_0xffffffff81001000 0xffffffff81001000"),
    ("r vfs_read", "r:kprobes/r_vfs_read_0 vfs_read"),
    ("p vfs_read%return", "r:kprobes/r_vfs_read_0 vfs_read"),
    ("p:ev vfs_read+0%return $retval", "r:kprobes/ev vfs_read arg1=$retval"),
    ("r10:ev vfs_read", "r10:kprobes/ev vfs_read"),
    ("p:grp/ vfs_read", "p:grp/p_vfs_read_0 vfs_read"),
    ("p:grp.ev vfs_read", "p:grp/ev vfs_read"),
    ("p:my-grp/ev vfs_read", "p:my-grp/ev vfs_read"),
    ("p foo.isra.0", "p:kprobes/p_foo_isra_0_0 foo.isra.0"),
    ("p mymod:func+8", "p:kprobes/p_mymod_func_8 mymod:func+8"),
    ("  p:ev   vfs_read\ta=%ax:u8   # comment", "p:kprobes/ev vfs_read a=%ax:u8"),
    ("p:ev vfs_read s=\\\"str\" t=+0(%di):b4@2/8 u=+0(%di):char[3]",
     'p:kprobes/ev vfs_read s=\\"str" t=+0(%di):b4@2/8 u=+0(%di):char[3]'),
]


@pytest.mark.parametrize("command, back", READ_BACK)
def test_read_back(command, back):
    d = parse_command(command)
    assert d.canonical() == back
    assert parse_command(back).canonical() == back


def test_return_suffix_is_r():
    a = parse_command("p:ev vfs_read%return $retval")
    b = parse_command("r:ev vfs_read $retval")
    assert (a.kind, a.is_return, a.canonical()) == (b.kind, b.is_return, b.canonical())


def test_fields(ksyms):
    d = parse_command("r8:grp/ev vfs_read+0 a=$arg1", ksyms)
    assert (d.kind, d.group, d.event, d.symbol, d.offset, d.addr, d.maxactive) == \
        ("r", "grp", "ev", "vfs_read", 0, None, 8)
    assert d.resolve(ksyms) == TEXT + 0x1000
    a = parse_command("p 0xffffffff81001004")
    assert (a.symbol, a.addr, a.resolve(ksyms)) == (None, TEXT + 0x1004, TEXT + 0x1004)


def test_function_entry_flag(ksyms):
    assert parse_command("p vfs_read", ksyms).on_func_entry
    assert not parse_command("p vfs_read+4", ksyms).on_func_entry
    assert not parse_command("r vfs_read", ksyms).on_func_entry
    assert not parse_command("p 0xffffffff81001000", ksyms).on_func_entry


@pytest.mark.parametrize("head, value", [("r1", 1), ("r4096", 4096), ("r0x10", 16),
                                         ("r010", 8)])
def test_maxactive(head, value):
    assert parse_command(f"{head} vfs_read").maxactive == value
    assert parse_command(f"{head}:ev vfs_read").canonical().startswith(f"r{value}:")


def test_name_lengths():
    ok, long = "e" * 63, "e" * 64
    assert parse_command(f"p:{ok}/{ok} vfs_read").event == ok
    for command, code in ((f"p:{long} vfs_read", "EVENT_TOO_LONG"),
                          (f"p:{long}/ev vfs_read", "GROUP_TOO_LONG")):
        with pytest.raises(ProbeSyntaxError) as info:
            parse_command(command)
        assert info.value.code == code


def test_generated_name_is_cut_to_63():
    d = parse_command("p " + "f" * 80)
    assert d.event == ("p_" + "f" * 80)[:63]


def test_module_symbol_not_loaded_is_deferred(ksyms):
    assert parse_command("p nomod:func", ksyms).symbol == "nomod:func"


@pytest.mark.parametrize("line", ["x vfs_read", "p", "r4:ev", "p /bin/sh:0x10", " -:ev"])
def test_errno_only_failures(line):
    with pytest.raises(ProbeCommandError) as info:
        parse_command(line)
    assert not isinstance(info.value, ProbeSyntaxError)
    assert info.value.errno == errno.EINVAL


def test_blank_and_comment_lines():
    assert parse_command("") is None
    assert parse_command("   # nothing") is None
    assert split_commands("p a\n\n# c\n  r b # x\n") == ["p a", "  r b "]


@pytest.mark.parametrize("line, group, event, rest", [
    ("-:myprobe", None, "myprobe", ()),
    ("-:grp/ev", "grp", "ev", ()),
    ("-:grp/", "grp", "", ()),
    ("-:ev vfs_read a=%ax", None, "ev", ("vfs_read", "a=%ax")),
])
def test_delete(line, group, event, rest):
    assert parse_command(line) == DeleteCommand(group, event, rest)


@pytest.mark.parametrize("line", ["-", "-ev", "-:"])
def test_bad_delete(line):
    with pytest.raises(ProbeCommandError) as info:
        parse_command(line)
    assert info.value.errno == errno.EINVAL


def test_delete_matching():
    one = parse_command("p:grp/ev vfs_read a=%ax b=%bx")
    two = parse_command("p:grp/ev kfree+4 a=%ax b=%bx")
    addr = parse_command("p:other/x 0xffffffff81001000")
    assert parse_command("-:grp/ev").matches(one)
    assert parse_command("-:ev").matches(two)
    assert parse_command("-:grp/").matches(two)
    assert not parse_command("-:grp/").matches(addr)
    assert parse_command("-:ev kfree+4").matches(two)
    assert not parse_command("-:ev kfree+4").matches(one)
    assert parse_command("-:ev vfs_read a=%ax").matches(one)
    assert not parse_command("-:ev vfs_read b=%bx").matches(one)
    assert parse_command("-:x 0xffffffff81001000").matches(addr)


def test_print_fmt():
    d = parse_command("r:ev vfs_read a=$retval:s32 s=+0(%di):string c=+0(%di):u8[2]")
    assert d.print_fmt() == ('"(%lx <- %lx) a=%d s=\\"%s\\" c={%u,%u}", REC->__probe_func, '
                             'REC->__probe_ret_ip, REC->a, __get_str(s), REC->c[0], REC->c[1]')


def test_trace_line():
    line = format_trace_line("bash", 1234, 0, "d....", 123_456_789_012, "myprobe",
                             "do_sys_open+0x0/0x2a0", " dfd=0x3")
    assert line == ("            bash-1234    [000] d....   123.456789: myprobe: "
                    "(do_sys_open+0x0/0x2a0) dfd=0x3")


def test_trace_line_clock_rounds_to_microseconds():
    assert " 0.000002: " in format_trace_line("a", 1, 3, ".....", 1_500, "e", "f")
    assert " 0.000001: " in format_trace_line("a", 1, 3, ".....", 1_499, "e", "f")
    assert "[003]" in format_trace_line("a", 1, 3, ".....", 0, "e", "f")


def test_probe_ips(ksyms):
    assert format_probe_ip(ksyms, TEXT + 0x1000) == "vfs_read+0x0/0x100"
    assert format_retprobe_ip(ksyms, TEXT + 0x1110, TEXT + 0x1000) == \
        "kernel_clone+0x10/0x100 <- vfs_read"
    assert format_retprobe_ip(ksyms, 0x1234, 0x5678) == "0x1234 <- 0x00005678"
    assert format_probe_ip(ksyms, 0) == "0"
    assert format_retprobe_ip(ksyms, TEXT + 0x1600, TEXT + 0x1000, trampoline=TEXT + 0x1600) \
        == "[unknown/kretprobe'd] <- vfs_read"


def test_irq_flags():
    assert irq_flags() == "....."
    assert irq_flags(irqs_off=True) == "d...."
    assert irq_flags(irqs_off=True, hardirq=True, preempt_count=0x12) == "d.h21"
    assert irq_flags(need_resched=True, softirq=True) == ".Ns.."
