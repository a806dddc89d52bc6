"""Regression: a return after its kretprobe was unregistered ("orphaned") was counted
only in the manager's orphans_returned, never in rp.miss_report(), whose docstring
promised an 'orphaned' cause."""

import pytest

from emu import Machine
from kprobes import Kprobe, Kprobes, Kretprobe
from tests.kprobes.conftest import sym


@pytest.mark.parametrize("design", ["task", "stack"])
def test_an_orphaned_return_is_a_miss_of_its_kretprobe(ret_targets_o, design):
    m = Machine()
    k = Kprobes(m, kretprobe_design=design)
    m.boot()
    m.load_module(ret_targets_o)
    called = []
    rp = Kretprobe(symbol_name="inner", handler=lambda ri, regs: called.append(1))

    def unregister_now(p, regs):
        k.unregister_kretprobe(rp)             # inner's instance is in flight now
        return 0

    k.register_kretprobe(rp)
    k.register_kprobe(Kprobe(addr=sym(m, "inner") + 4, pre_handler=unregister_now))
    assert m.call("call_outer", 3) == 17
    assert called == [] and rp.miss_report() == {"orphaned": 1}
    assert rp.nmissed == 0                     # Linux's nmissed counts maxactive only
    assert m.call("call_outer", 3) == 17 and rp.miss_report() == {"orphaned": 1}
