"""insmod and rmmod run the module's own code, as do_init_module() and delete_module() do:
`.init_array` constructors then init_module() on load, cleanup_module() on unload, the
notifiers told COMING before init, LIVE after it and GOING after cleanup -- and a failed
init fails the load with nothing left behind."""

import errno

import pytest

from emu import GuestFault, Machine, ModuleLoadError
from emu.modules import MODULE_STATE_COMING, MODULE_STATE_GOING, MODULE_STATE_LIVE
from tests.conftest import compile_module


def trace(m):
    """What init_targets' code has run so far, one letter each (init_trace)."""
    return m.read("init_targets:init_trace", 16).rstrip(b"\0").decode()


def watch(m):
    """Record every notification as (state, module name)."""
    seen = []
    m.modules.notifiers.append(lambda state, mod: seen.append((state, mod.name)))
    return seen


def test_constructors_then_init_on_load_and_cleanup_on_unload(machine, init_targets_o):
    m = machine
    at = []
    m.modules.notifiers.append(lambda state, mod: at.append((state, trace(m), mod.state)))
    mod = m.load_module(init_targets_o)
    # the priority constructor first, then the default one, then init_module (which calls
    # init_helper); COMING before any of them ran, LIVE after
    assert trace(m) == "acih"
    assert (mod.state, mod.init_ret) == (MODULE_STATE_LIVE, 0)
    assert m.console.endswith("init_targets: init\n")
    assert at == [(MODULE_STATE_COMING, "", MODULE_STATE_COMING),
                  (MODULE_STATE_LIVE, "acih", MODULE_STATE_LIVE)]
    clock = m.clock.now
    m.unload_module(mod)
    # cleanup_module ran before GOING, while the module was still there to read
    assert at[2] == (MODULE_STATE_GOING, "acihx", MODULE_STATE_GOING)
    assert m.console.endswith("init_targets: init\ninit_targets: cleanup\n")
    assert m.clock.now == clock                  # the module's code ran off the guest clock
    assert m.symbols.lookup_name("init_targets:init_trace") is None


def test_a_module_loaded_before_boot_is_initialised_when_the_machine_boots(init_targets_o):
    m = Machine()
    seen = watch(m)
    mod = m.load_module(init_targets_o)
    assert mod.state == MODULE_STATE_COMING and trace(m) == ""   # nothing runs before boot
    m.boot()
    assert mod.state == MODULE_STATE_LIVE and trace(m) == "acih"
    assert seen == [(MODULE_STATE_COMING, "init_targets"), (MODULE_STATE_LIVE, "init_targets")]
    assert m.run().reason == "halt"


def test_unloading_a_module_whose_init_never_ran_runs_no_cleanup(init_targets_o):
    m = Machine()
    seen = watch(m)
    m.load_module(init_targets_o)
    m.unload_module("init_targets")
    m.boot()
    assert "init_targets" not in m.console
    assert seen == [(MODULE_STATE_COMING, "init_targets"), (MODULE_STATE_GOING, "init_targets")]


def test_a_failing_init_fails_the_load_with_its_errno_and_leaves_nothing(machine,
                                                                          init_fails_o):
    m = machine
    seen = watch(m)
    used = m.module_area.used_bytes
    nsyms = len(m.symbols)
    with pytest.raises(ModuleLoadError) as info:
        m.load_module(init_fails_o)
    assert info.value.errno == errno.ENODEV
    assert str(info.value) == (f"{init_fails_o}: init_module of module init_fails returned "
                               "-19: No such device")
    assert m.console.endswith("init_fails: ctor\ninit_fails: init\n")   # no cleanup
    assert m.module_area.used_bytes == used and len(m.symbols) == nsyms
    assert m.loaded_modules() == [] and m.symbols.lookup_name("init_module") is None
    assert seen == [(MODULE_STATE_COMING, "init_fails"), (MODULE_STATE_GOING, "init_fails")]
    with pytest.raises(ModuleLoadError):          # and it fails the same way again
        m.load_module(init_fails_o)
    assert m.module_area.used_bytes == used


def test_a_positive_init_return_loads_the_module_with_linux_warning(machine, build_target):
    with pytest.warns(RuntimeWarning, match=r"'init_fails'->init suspiciously returned 5, "
                      "it should follow 0/-E convention; loading module anyway"):
        mod = machine.load_module(build_target("init_fails", "-DINIT_RET=5"))
    assert (mod.state, mod.init_ret) == (MODULE_STATE_LIVE, 5)
    machine.unload_module(mod)
    assert machine.console.endswith("init_fails: cleanup\n")


def test_a_faulting_init_fails_the_load_with_efault_and_the_machine_goes_on(machine,
                                                                            build_target):
    m = machine
    used = m.module_area.used_bytes
    with pytest.raises(ModuleLoadError) as info:
        m.load_module(build_target("init_fails", "-DINIT_FAULT"))
    assert info.value.errno == errno.EFAULT
    assert isinstance(info.value.__cause__, GuestFault)
    assert "the init of module init_fails faulted: invalid opcode at init_module+" in \
        str(info.value)
    assert m.loaded_modules() == [] and m.module_area.used_bytes == used
    assert m.call("fib", 10) == 55 and m.run().reason == "halt"


def test_an_init_failing_at_boot_is_raised_by_boot(init_fails_o, init_targets_o):
    m = Machine()
    m.load_module(init_fails_o)
    good = m.load_module(init_targets_o)
    with pytest.raises(ModuleLoadError) as info:
        m.boot()
    assert info.value.errno == errno.ENODEV
    assert m.booted and m.loaded_modules() == [good] and good.state == MODULE_STATE_LIVE
    assert m.run().reason == "halt"


def test_a_module_with_init_but_no_cleanup_cannot_be_unloaded(machine, tmp_path):
    src = tmp_path / "no_exit.c"
    src.write_text("int init_module(void) { return 0; }\n")
    mod = machine.load_module(compile_module(src, tmp_path))
    with pytest.raises(ModuleLoadError) as info:
        machine.unload_module(mod)
    assert info.value.errno == errno.EBUSY
    assert str(info.value) == ("module no_exit has an init_module() but no cleanup_module(): "
                               "it cannot be unloaded")
    assert machine.loaded_modules() == [mod]


def test_a_module_without_init_or_constructors_still_goes_live(machine, probe_targets_o):
    mod = machine.load_module(probe_targets_o)
    assert (mod.state, mod.init_ret) == (MODULE_STATE_LIVE, 0)
    assert mod.constructor_tables() == []
