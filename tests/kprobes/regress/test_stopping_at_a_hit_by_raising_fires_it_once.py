"""Regression: a pre_handler that raised to stop the run at its Nth hit put the guest back
before the int3 -- and when the run went on, the int3 trapped again and that same hit
fired a second time (N was seen twice, and every later hit was numbered one off)."""

import pytest

from emu import Machine
from kprobes import Kprobe, Kprobes


class Stop(Exception):
    pass


def count_hits(stop_at=None):
    m = Machine()
    k = Kprobes(m)
    m.boot()
    seen, posts = [], []

    def pre(p, regs):
        seen.append(len(seen) + 1)
        if len(seen) == stop_at:
            raise Stop(stop_at)
        return 0

    k.register_kprobe(Kprobe(symbol_name="schedule", pre_handler=pre,
                             post_handler=lambda p, regs, flags: posts.append(1)))
    stops = 0
    while True:
        try:
            result = m.run()
            break
        except Stop:
            stops += 1
    return seen, len(posts), stops, result, m.console, m.clock.now


def test_the_stopped_hit_goes_on_once():
    seen, posts, stops, result, console, clock = count_hits()
    assert len(seen) > 5 and posts == len(seen) and stops == 0
    for n in (1, 3, len(seen)):
        again = count_hits(stop_at=n)
        assert again[0] == seen                   # every hit exactly once, in order
        assert again[1:3] == (posts, 1)           # the stopped hit's post_handler too
        assert again[3].reason == result.reason and again[4:] == (console, clock)


@pytest.mark.parametrize("meanwhile", ["call", "unregister"])
def test_what_happens_meanwhile(meanwhile):
    """The marker is the stopped run's own: a hit inside an m.call made meanwhile (at
    the same address) calls the pre_handler as usual, and a probe removed meanwhile
    forgets it.  An m.call that raised leaves none: it cannot be resumed."""
    m = Machine()
    k = Kprobes(m)
    m.boot()
    calls = []

    def pre(p, regs):
        calls.append(m.call_depth)
        if len(calls) == 1:
            raise Stop()
        return 0

    p = Kprobe(symbol_name="fib", pre_handler=pre)
    k.register_kprobe(p)
    with pytest.raises(Stop):
        m.run()
    stopped_sp = m.engine.reg("sp")
    assert k.arch.kcb.resume_hit == (p.addr, stopped_sp)
    if meanwhile == "call":
        assert m.call("fib", 1) == 1 and calls == [0, 1]
        assert k.arch.kcb.resume_hit == (p.addr, stopped_sp)
    else:
        k.unregister_kprobe(p)
        assert k.arch.kcb.resume_hit is None
        k.register_kprobe(p)
    assert m.run().reason == "halt"
    assert calls[:2] == ([0, 1] if meanwhile == "call" else [0, 0])


def test_an_m_call_that_raised_leaves_no_marker(km):
    m, k = km
    calls = []

    def pre(p, regs):
        calls.append(1)
        if len(calls) == 1:
            raise Stop()
        return 0

    k.register_kprobe(Kprobe(symbol_name="fib", pre_handler=pre))
    with pytest.raises(Stop):
        m.call("fib", 1)
    assert k.arch.kcb.resume_hit is None
    assert m.call("fib", 1) == 1 and calls == [1, 1]
