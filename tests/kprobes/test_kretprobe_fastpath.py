"""Return probes on trap.c's C path (design "task"): the common entry and trampoline cases
are taken in C with the Python reference's results, everything else is handed to the
Python handlers before anything changed.  Like every kprobes test, these run on both
paths (conftest.trap_path): on the Python path the Python handlers take every case."""

import sys

import pytest

from kprobes import Kprobe, Kretprobe
from kprobes.arch import KretprobeInstance
from tests.kprobes.conftest import sym


def count_python_handlers(k, rp):
    """Wrap the Python handlers the C path stands in for: the kretprobe's entry
    pre_handler (pre_handler_kretprobe) and the trampoline probe's."""
    calls = {"entry": 0, "trampoline": 0}
    tp = k.kretprobes.trampoline_p

    def wrap(p, name):
        inner = p.pre_handler

        def counted(probe, regs):
            calls[name] += 1
            return inner(probe, regs)
        p.pre_handler = counted

    wrap(rp.kp, "entry")
    wrap(tp, "trampoline")
    return calls


def test_plain_returns_are_taken_in_c(rm, trap_path):
    m, k = rm
    seen = []
    rp = Kretprobe(symbol_name="rdepth", maxactive=20,
                   handler=lambda ri, regs: seen.append((regs.ax, ri.ret_addr, ri.task)))
    k.register_kretprobe(rp)
    calls = count_python_handlers(k, rp)
    assert m.call("rdepth", 5) == 5
    frames = 6
    in_python = 0 if trap_path == "c-path" else frames
    assert calls == {"entry": in_python, "trampoline": in_python}
    assert [ax for ax, _r, _t in seen] == list(range(frames))
    assert [r for _a, r, _t in seen] == [sym(m, "rdepth_ret")] * 5 + [m.call_return_address]
    assert {t for _a, _r, t in seen} == {m.current_addr}
    assert (rp.entries, rp.returns, rp.nmissed) == (frames, frames, 0)
    assert len(rp.free_instances) == 20 and rp.used_instances == []
    assert k.kretprobes.instances() == []
    assert (k.traps["int3"], k.traps["debug"]) == (2 * frames, frames)


def test_the_cases_the_c_path_hands_to_python(rm, trap_path):
    """An entry_handler, an empty pool and an orphan go to the Python handlers, with
    the Python results."""
    m, k = rm
    c = trap_path == "c-path"
    vetoed = Kretprobe(symbol_name="inner", handler=lambda ri, regs: None,
                       entry_handler=lambda ri, regs: 1)
    small = Kretprobe(symbol_name="rdepth", handler=lambda ri, regs: None, maxactive=2)
    k.register_kretprobes([vetoed, small])
    calls = {rp.kp.symbol_name: count_python_handlers(k, rp) for rp in (vetoed, small)}
    assert m.call("call_outer", 5) == 21
    assert vetoed.miss_report() == {"entry_handler": 1} and vetoed.returns == 0
    assert calls["inner"]["entry"] == 1          # entry_handler: always Python
    assert m.call("rdepth", 4) == 4              # 5 frames, 2 instances
    assert small.nmissed == 3 and small.returns == 2
    # the 3 misses ran in Python; the 2 taken, and their returns, in C
    assert calls["rdepth"]["entry"] == (3 if c else 5)
    assert calls["rdepth"]["trampoline"] == (0 if c else 2)


def test_an_orphan_returns_through_python(rm, trap_path):
    m, k = rm
    rp = Kretprobe(symbol_name="inner", handler=lambda ri, regs: None)
    k.register_kretprobe(rp)
    calls = count_python_handlers(k, rp)
    k.register_kprobe(Kprobe(addr=sym(m, "inner") + 4,
                             pre_handler=lambda p, r: k.unregister_kretprobe(rp) or 0))
    assert m.call("call_outer", 3) == 17
    assert k.kretprobes.orphans_returned == 1 and rp.miss_report() == {"orphaned": 1}
    assert calls["trampoline"] == 1              # the orphan's return: Python, both paths


def test_a_handler_that_raises_on_the_c_path(rm):
    m, k = rm

    def handler(ri, regs):
        raise ValueError("from the handler")

    rp = Kretprobe(symbol_name="inner", handler=handler)
    k.register_kretprobe(rp)
    with pytest.raises(ValueError, match="from the handler") as exc:
        m.call("call_outer", 3)
    assert exc.value.kprobe is k.kretprobes.trampoline_p
    assert not k.arch.kcb.running and k.kretprobes.handling is None
    rp.handler = lambda ri, regs: None
    assert m.call("call_outer", 3) == 17        # the machine goes on


def test_an_instance_is_a_small_struct():
    """What an instance costs: its C struct (no __dict__; an address is a Python int only
    once Python reads it, then kept) -- 104 bytes with the GC's header, data made only
    when asked for when data_size is 0."""
    rp = Kretprobe(symbol_name="x")
    ri = KretprobeInstance(rp)
    assert sys.getsizeof(ri) <= 104 and not hasattr(ri, "__dict__")
    assert (ri.rp, ri.orphan_of, ri.ret_addr, ri.task, ri.stack_addr) == (rp, None, 0, 0, 0)
    assert ri.data == bytearray() and ri.data is ri.data
    ri.ret_addr = 0xFFFFFFFF81000010
    assert ri.ret_addr == 0xFFFFFFFF81000010 and ri.ret_addr is ri.ret_addr
    assert repr(ri) == "<kretprobe_instance x task=0x0 ret_addr=0xffffffff81000010>"
    rp.data_size = 16
    assert KretprobeInstance(rp).data == bytearray(16)
    with pytest.raises(OverflowError):
        ri.task = -1
