"""Modules end to end on the booted machine: insmod, call, kallsyms, rmmod, refusals."""

import errno
import subprocess

import pytest

from emu import Machine, ModuleLoadError


def test_module_is_loaded_called_and_unloaded(machine, probe_targets_o):
    mod = machine.load_module(probe_targets_o)
    assert mod.name == "probe_targets"
    assert machine.module_area.contains(mod.base)
    fib_plus = machine.symbols.lookup_name("mod_fib_plus")
    assert machine.symbols.format(fib_plus) == (
        f"mod_fib_plus+0x0/{machine.symbols.get('mod_fib_plus').size:#x} [probe_targets]")
    assert machine.is_kernel_text(fib_plus)
    assert machine.call("mod_fib_plus", 10, 5) == 60          # calls the kernel's fib
    assert machine.call("mod_strlen", "kprobes") == 7
    assert [machine.call("mod_bump") for _ in range(3)] == [1, 2, 3]
    assert machine.call("mod_greet") == len("hello from probe_targets\n")
    assert machine.console.endswith("hello from probe_targets\n")
    machine.unload_module(mod)
    assert machine.symbols.lookup_name("mod_fib_plus") is None
    assert not machine.is_kernel_text(fib_plus)
    again = machine.load_module(probe_targets_o)             # insmod after rmmod works
    assert machine.call("mod_bump") == 1                     # fresh .bss
    assert machine.run().reason == "halt"
    machine.unload_module(again)


def test_relocation_overflow_fails_with_enoexec(machine, tmp_path):
    if subprocess.run(["which", "as"], capture_output=True).returncode:
        pytest.skip("binutils 'as' not installed: cannot build the test object")
    src = tmp_path / "overflow.s"
    # movl $fib, %eax: an R_X86_64_32 of a kernel address, which cannot be zero-extended
    # from 32 bits -- Linux refuses it ("overflow in relocation type 10").
    src.write_text(".text\n.globl bad\nbad:\n  movl $fib, %eax\n  ret\n")
    obj = tmp_path / "overflow.o"
    subprocess.run(["as", "--64", "-o", str(obj), str(src)], check=True)
    used = machine.module_area.used_bytes
    with pytest.raises(ModuleLoadError) as info:
        machine.load_module(obj)
    assert info.value.errno == errno.ENOEXEC
    assert "overflow in relocation type 10" in str(info.value)
    assert machine.module_area.used_bytes == used and machine.symbols.lookup_name("bad") is None


def test_unknown_symbol_fails_with_enoent(machine, tmp_path):
    from tests.conftest import compile_module

    src = tmp_path / "needs.c"
    src.write_text("extern long no_such_kernel_function(void);\n"
                   "long f(void) { return no_such_kernel_function(); }\n")
    obj = compile_module(src, tmp_path)
    with pytest.raises(ModuleLoadError) as info:
        machine.load_module(obj)
    assert info.value.errno == errno.ENOENT
    assert "Unknown symbol no_such_kernel_function" in str(info.value)


def test_module_loads_before_boot_too(probe_targets_o):
    m = Machine()
    mod = m.load_module(probe_targets_o)
    assert m.symbols.lookup_name("mod_rdtsc") is not None and mod.size > 0
