"""Regression: loading was "like insmod" but never ran the module's `.init_array`
constructors, its init_module(), or on unload its cleanup_module()."""

from kprobes import Kprobe


def test_insmod_runs_init_array_and_init_module(km, init_targets_o):
    m, k = km
    mod = m.load_module(init_targets_o)
    # a (priority constructor), c (constructor), i (init_module), h (init_helper)
    assert m.read("init_targets:init_trace", 5) == b"acih\0"
    assert m.console.endswith("init_targets: init\n")
    hits = []
    k.register_kprobe(Kprobe(symbol_name="init_targets:cleanup_module",
                             pre_handler=lambda p, regs: hits.append(p.addr) or 0))
    m.unload_module(mod)
    assert len(hits) == 1 and m.console.endswith("init_targets: cleanup\n")
