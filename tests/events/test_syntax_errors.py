"""kprobe_syntax_errors.tc, the selftest way: the `^` in each command marks where Linux's
error_log puts the caret, and the case checks the code, the kernel's message and the caret.

Rows are the selftest's own commands (the newest version, intel-lab-lkp @6a53f810), then
the BTF rows as a BTF-less kernel answers them, then catalogue entries the selftest does
not reach.
"""

import errno

import pytest

from kprobes.events import (FETCH_TYPES, ErrorCode, ProbeSyntaxError, check_append,
                            compare_arg_type, parse_command, registration_error)

D65 = "12345678901234567890123456789012345678901234567890123456789012345"
NESTED14 = "+0(" * 14 + "@0" + ")" * 14

# (command with ^ at the caret, code, Linux's message)
SELFTEST = [
    ("p^100 vfs_read", "BAD_MAXACT_TYPE", "Maxactive is only for function exit"),
    ("r^1a111 vfs_read", "BAD_MAXACT", "Invalid maxactive number"),
    ("r^100000 vfs_read", "MAXACT_TOO_BIG", "Maxactive is too big"),
    ("p ^non_exist_func", "BAD_PROBE_ADDR", "Invalid probed address or symbol"),
    ("p ^hoge-fuga", "BAD_PROBE_ADDR", "Invalid probed address or symbol"),
    ("p ^hoge+1000-1000", "BAD_PROBE_ADDR", "Invalid probed address or symbol"),
    ("r ^vfs_read+10", "BAD_RETPROBE", "Retprobe address must be an function entry"),
    ("p:^/bar vfs_read", "NO_GROUP_NAME", "Group name is not specified"),
    (f"p:^{D65}/bar vfs_read", "GROUP_TOO_LONG", "Group name is too long"),
    ("p:^foo.1/bar vfs_read", "BAD_GROUP_NAME",
     "Group name must follow the same rules as C identifiers"),
    ("p:^ vfs_read", "NO_EVENT_NAME", "Event name is not specified"),
    (f"p:foo/^{D65} vfs_read", "EVENT_TOO_LONG", "Event name is too long"),
    ("p:foo/^bar.1 vfs_read", "BAD_EVENT_NAME",
     "Event name must follow the same rules as C identifiers"),
    ("p vfs_read ^$retval", "RETVAL_ON_PROBE", "$retval is not available on probe"),
    ("p vfs_read ^$stack10000", "BAD_STACK_NUM", "Invalid stack number"),
    ("p vfs_read ^$arg10000", "BAD_ARG_NUM", "Invalid argument number"),
    ("p vfs_read ^$none_var", "BAD_VAR", "Invalid $-valiable specified"),
    ("p vfs_read ^%none_reg", "BAD_REG_NAME", "Invalid register name"),
    ("p vfs_read ^@12345678abcde", "BAD_MEM_ADDR", "Invalid memory address"),
    ("p vfs_read ^@+10", "FILE_ON_KPROBE", "File offset is not available with kprobe"),
    ("p vfs_read arg1=\\^x", "BAD_IMM", "Invalid immediate value"),
    ('p vfs_read arg1=\\"abcd^', "IMMSTR_NO_CLOSE", "String is not closed with '\"'"),
    ("p vfs_read ^+0@0)", "DEREF_NEED_BRACE", "Dereference needs a brace"),
    ("p vfs_read ^+0ab1(@0)", "BAD_DEREF_OFFS", "Invalid dereference offset"),
    ("p vfs_read +0(+0(@0^)", "DEREF_OPEN_BRACE", "Dereference brace is not closed"),
    ("p vfs_read +0(^$comm)", "COMM_CANT_DEREF", "$comm can not be dereferenced"),
    ("p vfs_read ^&1", "BAD_FETCH_ARG", "Invalid fetch argument"),
    ("p vfs_read +0(^" + NESTED14[3:], "TOO_MANY_OPS", "Dereference is too much nested"),
    ("p vfs_read +0(@11):u8[10^", "ARRAY_NO_CLOSE", "Array is not closed"),
    ("p vfs_read +0(@11):u8[10]^a", "BAD_ARRAY_SUFFIX", "Array has wrong suffix"),
    ("p vfs_read +0(@11):u8[^10a]", "BAD_ARRAY_NUM", "Invalid array size"),
    ("p vfs_read +0(@11):u8[^256]", "ARRAY_TOO_BIG", "Array number is too big"),
    ("p vfs_read @11:^unknown_type", "BAD_TYPE", "Unknown type is specified"),
    ("p vfs_read $stack0:^string", "BAD_STRING", "String accepts only memory argument"),
    ("p vfs_read @11:^b10@a/16", "BAD_BITFIELD", "Invalid bitfield"),
    ("p vfs_read ^arg123456789012345678901234567890=@11", "ARG_NAME_TOO_LONG",
     "Argument name is too long"),
    ("p vfs_read ^=@11", "NO_ARG_NAME", "Argument name is not specified"),
    ("p vfs_read ^var.1=@11", "BAD_ARG_NAME",
     "Argument name must follow the same rules as C identifiers"),
    ("p vfs_read var1=@11 ^var1=@12", "USED_ARG_NAME", "This argument name is already used"),
    ("p vfs_read ^+1234567(+1234567(+1234567(+1234567(+1234567(+1234567(@1234))))))",
     "ARG_TOO_LONG", "Argument expression is too long"),
    ("p vfs_read arg1=^", "NO_ARG_BODY", "No argument expression"),
    ("p vfs_read^%hoge", "BAD_ADDR_SUFFIX", "Invalid probed address suffix"),
    ("p ^vfs_read+10%return", "BAD_RETPROBE", "Retprobe address must be an function entry"),
    ("p vfs_read+20 ^$arg*", "NOFENTRY_ARGS",
     "$arg* can be used only on function entry or exit"),
    ("p vfs_read $arg* ^$arg*", "DOUBLE_ARGS", "$arg* can be used only once in the parameters"),
    ("p vfs_read ^$arg*", "NOSUP_BTFARG", "BTF is not available or not supported"),
]

# The selftest's BTF rows, answered as a kernel without BTF answers them.
BTF_LESS = [
    ("p vfs_read args=^$arg*", "BAD_VAR", "Invalid $-valiable specified"),
    ("p vfs_read +0(^$arg*)", "BAD_VAR", "Invalid $-valiable specified"),
    ("r vfs_read ^$arg*", "NOSUP_BTFARG", "BTF is not available or not supported"),
    ("p vfs_read ^hoge", "NOSUP_BTFARG", "BTF is not available or not supported"),
    ("p vfs_read arg1=^(task_struct)file", "BAD_FETCH_ARG", "Invalid fetch argument"),
]

# Catalogue entries the selftest does not reach, with the caret where Linux's code puts it.
MORE = [
    ("p ^dup_sym", "NON_UNIQ_SYMBOL", "The symbol is not unique"),
    ("p vfs_read $comm:^x64", "NEED_STRING_TYPE",
     "$comm and immediate-string only accepts string type"),
    ("p vfs_read s=\\\"abc\":^u8", "NEED_STRING_TYPE",
     "$comm and immediate-string only accepts string type"),
    ("p vfs_read $comm:^string[2]", "NEED_STRING_TYPE",
     "$comm and immediate-string only accepts string type"),
    ("p vfs_read $stack:^symstr", "BAD_SYMSTRING", "Symbol String doesn't accept data/userdata"),
    ("p vfs_read \\1:^symstr", "BAD_SYMSTRING", "Symbol String doesn't accept data/userdata"),
    ("p vfs_read %ax:^x8[4]", "BAD_STRING", "String accepts only memory argument"),
    # After a dereference Linux leaves ctx->offset inside the braces (3 here), so the
    # type-stage carets land 3 columns right of the type.
    ("p vfs_read +0(%ax):sym^str[2]", "BAD_STRING", "String accepts only memory argument"),
    ("p vfs_read %ax:^b9@0/8", "BAD_BITFIELD", "Invalid bitfield"),
    ("p vfs_read %ax:^b0@0/8", "BAD_BITFIELD", "Invalid bitfield"),
    ("p vfs_read %ax:^b4@2/12", "BAD_TYPE", "Unknown type is specified"),
    ("p vfs_read ^$stackp", "BAD_VAR", "Invalid $-valiable specified"),
    ("p vfs_read ^$arg0", "BAD_ARG_NUM", "Invalid argument number"),
    ("p vfs_read+4 ^$arg1", "NOFENTRY_ARGS",
     "$arg* can be used only on function entry or exit"),
    ("p vfs_read+4 a=^$arg1", "NOFENTRY_ARGS",
     "$arg* can be used only on function entry or exit"),
    ("p vfs_read ^common_pid=%ax", "USED_ARG_NAME", "This argument name is already used"),
    ("p vfs_read arg2=%ax ^%bx", "USED_ARG_NAME", "This argument name is already used"),
    ("p vfs_read ^+u0%ax", "DEREF_NEED_BRACE", "Dereference needs a brace"),
    # `+u` shifts the text one column and Linux's offset arithmetic does not follow it.
    ("p vfs_read +u0(%a^x", "DEREF_OPEN_BRACE", "Dereference brace is not closed"),
    ("p vfs_read +0(%ax)^+10", "BAD_FETCH_ARG", "Invalid fetch argument"),
    ("p:^9foo vfs_read", "BAD_EVENT_NAME",
     "Event name must follow the same rules as C identifiers"),
    ("r^0 vfs_read", "BAD_MAXACT", "Invalid maxactive number"),
    ("r^4097 vfs_read", "MAXACT_TOO_BIG", "Maxactive is too big"),
    ("p ^vfs_read-4", "BAD_PROBE_ADDR", "Invalid probed address or symbol"),
    ("p 0xffffffff81001000 ^$retval", "RETVAL_ON_PROBE", "$retval is not available on probe"),
    ("r 0xffffffff81001000 ^$retval", "RETVAL_ON_PROBE", "$retval is not available on probe"),
    ("p 0xffffffff81001000 ^$arg1", "NOFENTRY_ARGS",
     "$arg* can be used only on function entry or exit"),
]


def _split(marked):
    pos = marked.index("^")
    return marked.replace("^", "", 1), pos


def _fails(marked, symbols):
    command, pos = _split(marked)
    with pytest.raises(ProbeSyntaxError) as info:
        parse_command(command, symbols)
    return info.value, command, pos


def _check(err, command, pos, code, message):
    assert (err.code, err.message, err.pos) == (code, message, pos)
    assert err.err is ErrorCode[code]
    assert err.command == command
    # ftrace_errlog_check: the caret line's length, with its newline, is 13 + pos.
    assert len(err.format().split("\n")[-1]) + 1 == 13 + pos


@pytest.mark.parametrize("marked, code, message", SELFTEST + BTF_LESS + MORE,
                         ids=lambda v: v if isinstance(v, str) and v.isupper() else None)
def test_error_and_caret(marked, code, message, ksyms):
    err, command, pos = _fails(marked, ksyms)
    _check(err, command, pos, code, message)


SYNTAX_ONLY = [row for row in SELFTEST + BTF_LESS + MORE
               if row[0] not in ("p ^non_exist_func", "p ^dup_sym")]


@pytest.mark.parametrize("marked, code, message", SYNTAX_ONLY,
                         ids=lambda v: v if isinstance(v, str) and v.isupper() else None)
def test_same_errors_without_kallsyms(marked, code, message):
    """Every error but the two that need the symbol table is a syntax error."""
    err, command, pos = _fails(marked, None)
    _check(err, command, pos, code, message)


def test_unknown_symbol_needs_kallsyms():
    assert parse_command("p non_exist_func").symbol == "non_exist_func"


def test_error_log_rendering():
    err, _command, _pos = _fails("p vfs_read ^$none_var", None)
    assert err.format() == ("trace_kprobe: error: Invalid $-valiable specified\n"
                            "  Command: p vfs_read $none_var\n"
                            "                      ^")
    assert err.format(timestamp_ns=12_345_678_901).startswith(
        "[   12.345678] trace_kprobe: error: ")
    assert err.caret_command() == "p vfs_read ^$none_var"
    assert err.errno == errno.EINVAL
    assert str(err) == "Invalid $-valiable specified"


def test_command_is_rebuilt_from_words():
    """Linux logs argv joined by single spaces, and the caret counts in that string."""
    with pytest.raises(ProbeSyntaxError) as info:
        parse_command("p   vfs_read\t  $none_var  # a comment")
    assert info.value.command == "p vfs_read $none_var"
    assert info.value.caret_command() == "p vfs_read ^$none_var"


def test_too_many_args_caret_on_first_arg():
    args = " ".join(f"a{i}=%ax" for i in range(129))
    with pytest.raises(ProbeSyntaxError) as info:
        parse_command(f"p vfs_read {args}")
    assert (info.value.code, info.value.pos, info.value.errno) == ("TOO_MANY_ARGS", 11,
                                                                     errno.E2BIG)
    assert len(parse_command(f"p vfs_read {' '.join(args.split()[:128])}").args) == 128


def test_event_too_big():
    """Six 512-byte arrays fill the 3072-byte event; the seventh does not fit."""
    six = " ".join(f"a{i}=+0(%ax):x64[64]" for i in range(6))
    assert len(parse_command(f"p vfs_read {six}").args) == 6
    with pytest.raises(ProbeSyntaxError) as info:
        parse_command(f"p vfs_read {six} a6=+0(%ax):x64[64]")
    err = info.value
    assert (err.code, err.errno) == ("EVENT_TOO_BIG", errno.E2BIG)
    # ctx->offset after the dereference: inside `a6=+0(`.
    assert err.caret_command().endswith(" a6=+0(^%ax):x64[64]")


def test_thirteen_dereferences_fit():
    """@0 is an immediate and a load; 13 more loads fill the 15 usable slots once the last
    load becomes the store."""
    code = parse_command("p vfs_read " + "+0(" * 13 + "@0" + ")" * 13).args[0].code
    assert [op[0] for op in code] == ["imm"] + ["deref"] * 13 + ["st_mem"]


def test_unresolvable_data_symbol_is_a_registration_error(ksyms):
    """@SYM is resolved when the probe is registered: an unknown one is ENOENT, reported
    on the probe point; a malformed offset is EINVAL."""
    err, command, pos = _fails("p ^vfs_read @deaqswdefr", ksyms)
    _check(err, command, pos, "BAD_PROBE_ADDR", "Invalid probed address or symbol")
    assert err.errno == errno.ENOENT
    err, command, pos = _fails("p ^vfs_read @_sdata+1-1", ksyms)
    _check(err, command, pos, "FAIL_REG_PROBE", "Failed to register probe event")


@pytest.mark.parametrize("errno_, code", [(errno.EILSEQ, "BAD_INSN_BNDRY"),
                                          (errno.ENOENT, "BAD_PROBE_ADDR"),
                                          (errno.EINVAL, "FAIL_REG_PROBE"),
                                          (errno.EBUSY, "FAIL_REG_PROBE")])
def test_registration_errnos(errno_, code):
    """Case 42 (`p ^vfs_read+3` on an ftrace site) and the other errnos of
    register_trace_kprobe(), caret on the probe point."""
    err = registration_error(parse_command("p vfs_read+3"), errno_)
    assert (err.code, err.caret_command(), err.errno) == (code, "p ^vfs_read+3", errno_)


@pytest.mark.parametrize("errno_", [errno.ENOMEM, errno.EEXIST])
def test_registration_errnos_without_log(errno_):
    err = registration_error(parse_command("p vfs_read"), errno_)
    assert not isinstance(err, ProbeSyntaxError) and err.errno == errno_


MULTIPROBE = [
    # existing, new with ^, code
    ("p:kprobes/testevent kernel_clone", "^r:kprobes/testevent do_exit", "DIFF_PROBE_TYPE",
     "Probe type is different from existing probe"),
    ("p:kprobes/testevent kernel_clone abcd=\\1", "p:kprobes/testevent kernel_clone ^bcd=\\1",
     "DIFF_ARG_TYPE", "Argument type or name is different from existing probe"),
    ("p:kprobes/testevent kernel_clone abcd=\\1",
     "p:kprobes/testevent kernel_clone ^abcd=\\1:u8",
     "DIFF_ARG_TYPE", "Argument type or name is different from existing probe"),
    ("p:kprobes/testevent kernel_clone abcd=\\1",
     'p:kprobes/testevent kernel_clone ^abcd=\\"foo"',
     "DIFF_ARG_TYPE", "Argument type or name is different from existing probe"),
    ("p:kprobes/testevent kernel_clone abcd=\\1", "^p:kprobes/testevent kernel_clone abcd=\\1",
     "SAME_PROBE", "There is already the exact same probe event"),
]


@pytest.mark.parametrize("existing, marked, code, message", MULTIPROBE,
                         ids=[row[2] for row in MULTIPROBE])
def test_multiprobe_errors(existing, marked, code, message):
    command, pos = _split(marked)
    with pytest.raises(ProbeSyntaxError) as info:
        check_append([parse_command(existing)], parse_command(command))
    _check(info.value, command, pos, code, message)
    assert info.value.errno == errno.EEXIST


def test_multiprobe_appends():
    """Another place with the same argument names and types may join the event: no error,
    and compare_arg_type() finds no difference."""
    old = parse_command("p:kprobes/testevent kernel_clone abcd=\\1")
    new = parse_command("p:kprobes/testevent do_exit abcd=\\2")
    assert compare_arg_type(new, old) == 0
    assert check_append([old], new) is None
    # the same type by another spelling: a bitfield's container is its type
    old = parse_command("p:kprobes/ev vfs_read v=+0(%di):u8")
    new = parse_command("p:kprobes/ev kfree v=+0(%di):b3@1/8")
    assert new.args[0].type is old.args[0].type is FETCH_TYPES["u8"]
    assert compare_arg_type(new, old) == 0
    assert check_append([old], new) is None


def test_multiprobe_fewer_args_caret_past_the_end():
    old = parse_command("p:kprobes/ev vfs_read a=%ax b=%bx")
    new = parse_command("p:kprobes/ev kfree a=%ax")
    with pytest.raises(ProbeSyntaxError) as info:
        check_append([old], new)
    assert info.value.pos == len(new.command) + 1
