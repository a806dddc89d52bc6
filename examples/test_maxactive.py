"""fib(15) under a maxactive-4 kretprobe: 1973 calls, but only 4 instances, and a call gets
one only while one is free (an instance comes back when its call returns).  The counters
are exact and the same on every run: 15 returns seen, every other call a miss in
nmissed."""

from kprobes import Kretprobe


def test_fib15_under_a_maxactive_4_kretprobe_misses_exactly_1958_returns(machine, kprobes):
    returns = []
    rp = Kretprobe(symbol_name="fib", maxactive=4, handler=lambda ri, regs: returns.append(regs.ax))
    kprobes.register_kretprobe(rp)
    assert machine.call("fib", 15) == 610
    assert len(returns) == 15 and returns[-1] == 610
    assert rp.nmissed == 1958
    assert len(returns) + rp.nmissed == 1973          # fib(15) makes 1973 calls
