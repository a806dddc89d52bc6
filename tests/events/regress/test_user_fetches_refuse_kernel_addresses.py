"""Regression: `ustring` and `+u(...)` fetches read kernel addresses as if they were user
memory.  Linux's copy_from_user refuses any address at or above TASK_SIZE_MAX and the
trace prints (fault); a user address is read as before."""

import pytest

from kprobes.events import FAULT, parse_command
from kprobes.events.trace_probe import TASK_SIZE_MAX

KERNEL = 0xFFFF888000001000
USER = 0x0000000000601000


@pytest.mark.parametrize("arg, want_kernel, want_user", [
    ("+0(%di):ustring", FAULT, "user text"),
    ("+u0(%di):u64", FAULT, int.from_bytes(b"user tex", "little")),
    ("+0(+u0(%si)):string", FAULT, "kernel text"),   # the user pointer, then kernel text
    ("+0(%di):string", "kernel text", "user text"),  # a kernel fetch reads either
])
def test_a_user_fetch_of_a_kernel_address_faults(ctx, mem, ksyms, arg, want_kernel,
                                                  want_user):
    mem.write(KERNEL, b"kernel text\0")
    mem.write(USER, b"user text\0")
    mem.u64(USER + 0x100, KERNEL)                # a user pointer to kernel memory
    mem.u64(KERNEL + 0x100, USER)
    defn = parse_command(f"p:x vfs_read v={arg}", ksyms)
    (fa,) = defn.args
    ctx.regs.di, ctx.regs.si = KERNEL, KERNEL + 0x100
    assert fa.fetch(ctx) == want_kernel
    ctx.regs.di, ctx.regs.si = USER, USER + 0x100
    assert fa.fetch(ctx) == want_user


def test_the_boundary():
    from kprobes.events.trace_probe import _user

    assert _user(TASK_SIZE_MAX - 8, 8) == TASK_SIZE_MAX - 8
    with pytest.raises(Exception, match="not mapped"):
        _user(TASK_SIZE_MAX - 7, 8)


def test_a_user_string_must_end_below_task_size_max(ctx, mem, ksyms):
    """Its NUL must lie below TASK_SIZE_MAX, whatever bytes come before it."""
    defn = parse_command("p:x vfs_read v=+0(%di):ustring", ksyms)
    (fa,) = defn.args
    start = TASK_SIZE_MAX - 4
    mem.write(start, b"\xff\xfeab" + b"\0")       # runs one byte past: the NUL is beyond
    ctx.regs.di = start
    assert fa.fetch(ctx) == FAULT
    mem.write(start, b"\xff\xfea\0")              # its NUL is the last user byte
    assert fa.fetch(ctx) == "\\xff\\xfea"
