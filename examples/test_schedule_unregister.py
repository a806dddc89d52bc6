"""A kretprobe on schedule() unregistered in the middle of the run disturbs no return:
tasks asleep in schedule() still have the trampoline as their return address when the
probe goes; each of them must still get back to its real caller, and the workload ends as
it does unprobed."""

from kprobes import Kretprobe


def test_a_kretprobe_on_schedule_unregistered_mid_run_disturbs_no_return(machine, kprobes):
    hits = []
    rp = Kretprobe(symbol_name="schedule", handler=lambda ri, regs: hits.append(ri.task))
    kprobes.register_kretprobe(rp)
    assert machine.run(max_insns=200_000).reason == "limit"
    kprobes.unregister_kretprobe(rp)
    seen = len(hits)
    result = machine.run()
    assert seen > 0 and len(hits) == seen              # no handler after unregistration
    assert result.reason == "halt" and result.exit_code == 0 and machine.oops is None
    assert machine.console.splitlines()[-1].startswith("init: 7 tasks exited, 0 failed")
