"""The engine's interrupt contract (emu/engine.py, emu/_fastpath.c): the C hook reads ip and
flags, tries trap_table[vector] in order, then on_interrupt, and the CPU resumes with the
(ip, flags) a handler returns; True writes nothing; an exception is re-raised from start()."""

import gc
import weakref

import pytest

from emu.engine import Engine
from emu.errors import MachineError

CODE = 0x1000           # int3; mov eax, 1; hlt
OTHER = 0x1100          # mov eax, 2; hlt
NESTED = 0x1200         # int3; mov eax, 5   (run to NESTED + 6)
X86_EFLAGS_CF = 0x1


def mov_eax(value):
    return b"\xb8" + value.to_bytes(4, "little")


@pytest.fixture
def eng():
    e = Engine(1 << 20)
    for addr, code in ((CODE, b"\xcc" + mov_eax(1) + b"\xf4"),
                       (OTHER, mov_eax(2) + b"\xf4"),
                       (NESTED, b"\xcc" + mov_eax(5))):
        e.ram[addr:addr + len(code)] = code
    e.set_reg("sp", 0x80000)
    return e


def test_a_handler_gets_ip_and_flags_and_its_tuple_is_where_the_cpu_resumes(eng):
    seen = []

    def handler(vector, ip, flags):
        seen.append((vector, ip, flags))
        return OTHER, flags | X86_EFLAGS_CF

    eng.trap_table[3] = [handler]
    eng.start(CODE)
    flags = eng.reg("flags")
    assert seen == [(3, CODE + 1, flags & ~X86_EFLAGS_CF)]      # ip after the int3
    assert eng.reg("ax") == 2 and flags & X86_EFLAGS_CF


def test_true_means_handled_and_nothing_written(eng):
    eng.trap_table[3] = [lambda vector, ip, flags: True]
    eng.start(CODE)
    assert eng.reg("ax") == 1 and eng.reg("ip") == CODE + 7


def test_a_handler_that_writes_ip_itself_returns_true(eng):
    def deliver_like(vector, ip, flags):
        eng.set_reg("ip", OTHER)
        return True

    eng.trap_table[3] = [deliver_like]
    eng.start(CODE)
    assert eng.reg("ax") == 2


def test_handlers_are_tried_in_order_until_one_claims_the_interrupt(eng):
    calls = []

    def declines(vector, ip, flags):
        calls.append("declines")
        return False

    def claims(vector, ip, flags):
        calls.append("claims")
        return True

    eng.trap_table[3] = [declines, claims, lambda *a: calls.append("never")]
    eng.on_interrupt = lambda *a: calls.append("on_interrupt")
    eng.start(CODE)
    assert calls == ["declines", "claims"]


def test_unclaimed_goes_to_on_interrupt_and_unhandled_stops_the_run(eng):
    seen = []
    eng.trap_table[3] = [lambda vector, ip, flags: None]
    eng.on_interrupt = lambda vector, ip, flags: seen.append((vector, ip))
    with pytest.raises(MachineError, match="interrupt 3 not handled"):
        eng.start(CODE)
    assert seen == [(3, CODE + 1)]
    assert eng.reg("ax") == 0 and eng.executed == 1     # stopped before the mov


def test_an_exception_is_reraised_from_start_and_the_guest_stops_at_once(eng):
    def boom(vector, ip, flags):
        raise ValueError("boom")

    eng.trap_table[3] = [boom]
    with pytest.raises(ValueError, match="boom"):
        eng.start(CODE)
    assert eng.reg("ip") == CODE + 1 and eng.reg("ax") == 0 and eng.executed == 1
    eng.trap_table[3] = [lambda vector, ip, flags: True]
    eng.start(eng.reg("ip"))                 # nothing left over: the run goes on
    assert eng.reg("ax") == 1


@pytest.mark.parametrize("resume", [OTHER, CODE + 1])
def test_nested_emulation_inside_a_handler(eng, resume):
    """A handler runs guest code (emu_start from inside the hook), which traps too; the
    outer result still decides where the CPU resumes, even when it is the trapped ip
    (the C hook compares with the CPU as it is after the nested run)."""
    seen, nested_ax = [], []

    def handler(vector, ip, flags):
        seen.append(ip)
        if ip == CODE + 1:
            eng.start(NESTED, NESTED + 6)
            nested_ax.append(eng.reg("ax"))
            return resume, flags
        return True

    eng.trap_table[3] = [handler]
    eng.start(CODE)
    assert seen == [CODE + 1, NESTED + 1] and nested_ax == [5]
    assert eng.reg("ax") == (2 if resume == OTHER else 1)


def test_an_exception_in_a_nested_run_reaches_the_handler_that_started_it(eng):
    """...and only it: restoring what the nested run changed (as m.call does), the outer
    run goes on."""
    caught = []

    def handler(vector, ip, flags):
        if ip == NESTED + 1:
            raise KeyError("inner")
        ctx, deadline = eng.context_save(), eng.icount.deadline
        try:
            eng.start(NESTED, NESTED + 6)
        except KeyError as exc:
            caught.append(exc)
        eng.context_restore(ctx)
        eng.icount.deadline = deadline
        return True

    eng.trap_table[3] = [handler]
    eng.start(CODE)
    assert len(caught) == 1 and eng.reg("ax") == 1


def test_an_engine_is_freed_with_its_hook():
    ref = weakref.ref(Engine(1 << 20))
    gc.collect()
    assert ref() is None
