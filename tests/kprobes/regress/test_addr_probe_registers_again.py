"""Regression: a Kprobe made with addr= could not be registered again after it was
unregistered -- the address registration had written back counted as "not asked for", and
registration failed with EINVAL "give either addr or symbol_name, not neither"."""

import pytest

from kprobes import Kprobe


@pytest.mark.parametrize("how", ["addr", "addr+offset", "symbol", "symbol+offset"])
def test_an_unregistered_probe_registers_again_where_it_was(km, how):
    m, k = km
    fib = m.symbols.lookup_name("fib")
    hits = []
    kwargs = {"addr": dict(addr=fib), "addr+offset": dict(addr=fib, offset=1),
              "symbol": dict(symbol_name="fib"),
              "symbol+offset": dict(symbol_name="fib", offset=1)}[how]
    p = Kprobe(pre_handler=lambda p, regs: hits.append(p.addr) or 0, **kwargs)
    want = fib + kwargs.get("offset", 0)
    for _ in range(3):
        k.register_kprobe(p)
        assert p.addr == want
        assert m.call("fib", 2) == 1
        k.unregister_kprobe(p)
    assert hits == [want] * 9                 # fib(2) calls fib three times


def test_a_moved_addr_is_asked_for(km):
    """The caller sets a new addr between registrations: that one is taken."""
    m, k = km
    fib, helper = m.symbols.lookup_name("fib"), m.symbols.lookup_name("do_fork")
    p = Kprobe(addr=fib)
    k.register_kprobe(p)
    k.unregister_kprobe(p)
    p.addr = helper
    k.register_kprobe(p)
    assert p.addr == helper and "  k  do_fork+0x0" in k.list()
