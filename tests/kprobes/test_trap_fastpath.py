"""The trap path's register traffic: ip and flags come from the engine's C interrupt hook and
go back to it; the registers a handler reads (once each) or writes (when it returns) are
read and written natively by the pt_regs view: a hit makes no ctypes crossing."""

from kprobes import Kprobe

CROSSINGS = ("reg", "set_reg", "regs", "set_regs")


def count_crossings(engine):
    """Wrap the engine's register calls (instance attributes shadow the methods)."""
    counts = {name: 0 for name in CROSSINGS}
    for name in CROSSINGS:
        method = getattr(engine, name)

        def counted(*args, _method=method, _name=name):
            counts[_name] += 1
            return _method(*args)

        setattr(engine, name, counted)
    return counts


def test_a_hit_makes_no_register_crossing_of_its_own(km):
    m, k = km
    counts = count_crossings(m.engine)
    assert m.call("fib", 5) == 5
    unprobed = dict(counts)
    k.register_kprobe(Kprobe(symbol_name="fib", pre_handler=lambda p, r: 0,
                             post_handler=lambda p, r, f: None))
    for name in CROSSINGS:
        counts[name] = 0
    assert m.call("fib", 5) == 5
    assert k.traps["int3"] == k.traps["debug"] == 15
    assert counts == unprobed


def test_registers_a_handler_reads_are_read_natively(km):
    m, k = km
    counts = count_crossings(m.engine)
    assert m.call("fib", 5) == 5
    unprobed = dict(counts)
    seen = []
    k.register_kprobe(Kprobe(symbol_name="fib",
                             pre_handler=lambda p, r: seen.append((r.di, r.rdi, r.ip)) or 0))
    for name in CROSSINGS:
        counts[name] = 0
    assert m.call("fib", 5) == 5
    fib = m.symbols.lookup_name("fib")
    # fib(5) calls fib(4), fib(3), ... depth first: the n of every call, in order.
    assert seen == [(n, n, fib + 1) for n in (5, 4, 3, 2, 1, 0, 1, 2, 1, 0, 3, 2, 1, 0, 1)]
    assert counts == unprobed


def test_a_pre_handler_that_returns_0_can_change_other_registers(km):
    m, k = km

    def pre(p, regs):
        if regs.di == 10:
            regs.di = 5
        return 0

    k.register_kprobe(Kprobe(symbol_name="fib", pre_handler=pre))
    assert m.call("fib", 10) == 5
    assert not k.arch.running


def test_a_post_handler_can_change_other_registers(km):
    m, k = km

    def post(p, regs, flags):
        if regs.di == 10:                # push %rbp was stepped: n is still in %rdi
            regs.di = 6
            regs.ax = 0xDEAD             # dead at this point of fib: no effect

    k.register_kprobe(Kprobe(symbol_name="fib", post_handler=post))
    assert m.call("fib", 10) == 8
    assert k.traps["int3"] == k.traps["debug"] == 25


def test_engine_trap_table_is_the_machines(km):
    m, k = km
    assert m.trap_handlers is m.engine.trap_table
    assert m.trap_handlers[3][0] == k.arch.kprobe_handler
    assert m.trap_handlers[1][0] == k.arch.post_kprobe_handler
