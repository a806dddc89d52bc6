"""Regression: inside the return handler of a tail-called function, the stack trace's
first entry was kretprobe_trampoline -- the callee's instance holds the trampoline as its
ret_addr (its slot had been hijacked by the tail caller's probe) -- instead of the real
caller the return goes to."""

from kprobes import Kretprobe


def test_the_tail_callees_handler_sees_the_real_caller(rm):
    m, k = rm
    traces = {}

    def handler(ri, regs):
        traces[ri.rp.kp.symbol_name] = ([f.split("/")[0] for f in
                                         m.format_trace(m.stack_trace(regs))][:2])

    for name in ("tail_f", "tail_g"):              # tail_f jumps to tail_g
        k.register_kretprobe(Kretprobe(symbol_name=name, handler=handler))
    assert m.call("call_tail", 5) == 106
    assert traces == {"tail_g": ["call_tail_ret+0x0"], "tail_f": ["call_tail_ret+0x0"]}
