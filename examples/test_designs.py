"""Both kretprobe designs (2.6.13's instances by task, the June 2005 original by return
slot) report the same returns, in the same order: the marker runs the same test on each."""

import pytest


@pytest.mark.parametrize("design", [
    pytest.param("task", marks=pytest.mark.kpemu(kretprobe_design="task")),
    pytest.param("stack", marks=pytest.mark.kpemu(kretprobe_design="stack")),
])
def test_both_kretprobe_designs_report_the_same_returns(design, machine, kprobes, kprobe_events):
    assert kprobes.kretprobes.design == design
    kprobe_events.add("r:forkret do_fork pid=$retval:s32")
    kprobe_events.add("r:mkret sys_mkdir ret=$retval:s64")
    assert machine.run().reason == "halt"
    assert [r.pid for r in kprobe_events.records("forkret")] == [2, 3, 4, 5, 6, 7, 8]
    assert [r.ret for r in kprobe_events.records("mkret")] == [0, 0, 0, -17]
