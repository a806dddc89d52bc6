"""Regression: loading was "like insmod" but never ran the module's `.init_array`
constructors, its init_module(), or on unload its cleanup_module()."""


def test_insmod_runs_init_array_and_init_module(machine, init_targets_o):
    m = machine
    mod = m.load_module(init_targets_o)
    # a (priority constructor), c (constructor), i (init_module), h (init_helper)
    assert m.read("init_targets:init_trace", 5) == b"acih\0"
    assert m.console.endswith("init_targets: init\n")
    cleanup_ran = []
    m.modules.notifiers.append(               # GOING: the module is still there to read
        lambda state, mod: cleanup_ran.append(m.read("init_targets:init_trace", 6)))
    m.unload_module(mod)
    assert cleanup_ran == [b"acihx\0"] and m.console.endswith("init_targets: cleanup\n")
