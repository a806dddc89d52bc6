"""The second mkdir of /tmp fails with -EEXIST: one event on sys_mkdir's return, the
workload run, the returns read back typed."""


def test_the_second_mkdir_of_tmp_fails_with_eexist(machine, kprobe_events):
    kprobe_events.add("p:mk sys_mkdir path=+0(%di):string")
    kprobe_events.add("r:mkret sys_mkdir ret=$retval:s64")
    assert machine.run().reason == "halt"
    paths = [r.path for r in kprobe_events.records("mk")]
    rets = [r.ret for r in kprobe_events.records("mkret")]
    assert list(zip(paths, rets)) == [("/tmp", 0), ("/home", 0), ("/var", 0), ("/tmp", -17)]
    assert {r.comm for r in kprobe_events.records("mkret")} == {"mkdir"}
