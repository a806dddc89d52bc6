"""Shared fixtures: a booted machine, the default image, and test modules compiled from C."""

import shutil
import subprocess
from pathlib import Path

import pytest

from emu import Machine
from emu.machine import DEFAULT_IMAGE

# The kpemu plugin (kprobes/pytest_plugin.py) is tested with inner pytest sessions.
pytest_plugins = ["pytester"]

TARGETS = Path(__file__).resolve().parent / "machine" / "targets"
# The kernel's own code-generation flags (kernel_images/toykernel/Makefile), so a module
# is built like a kernel module.
MODULE_CFLAGS = ["-c", "-O2", "-mcmodel=kernel", "-mno-red-zone", "-fno-pic", "-fno-pie",
                 "-ffreestanding", "-fno-asynchronous-unwind-tables", "-fcf-protection=none",
                 "-fno-omit-frame-pointer", "-fno-stack-protector", "-mgeneral-regs-only",
                 "-fno-builtin"]


def compile_module(source, out_dir, extra=()):
    if shutil.which("gcc") is None:
        pytest.skip("gcc not installed: cannot build a test module")
    out = Path(out_dir) / (Path(source).stem + ".o")
    subprocess.run(["gcc", *MODULE_CFLAGS, *extra, "-o", str(out), str(source)], check=True)
    return out


@pytest.fixture(scope="session")
def image_path():
    return DEFAULT_IMAGE


@pytest.fixture(scope="session")
def probe_targets_o(tmp_path_factory):
    return compile_module(TARGETS / "probe_targets.c", tmp_path_factory.mktemp("mod"))


@pytest.fixture(scope="session")
def build_target(tmp_path_factory):
    """build_target(name, *extra): tests/machine/targets/NAME.c built as a module (gcc
    `extra` flags such as -DINIT_RET=5), once per session for each set of flags."""
    built = {}

    def build(name, *extra):
        key = (name, extra)
        if key not in built:
            built[key] = compile_module(TARGETS / f"{name}.c",
                                        tmp_path_factory.mktemp(name), extra)
        return built[key]

    return build


@pytest.fixture(scope="session")
def init_targets_o(build_target):
    """constructors, init_module() and cleanup_module() that leave their marks."""
    return build_target("init_targets")


@pytest.fixture(scope="session")
def init_fails_o(build_target):
    """a module whose init_module() returns -ENODEV after its constructor ran."""
    return build_target("init_fails")


@pytest.fixture(scope="session")
def reuse_targets_o(build_target):
    """a module whose text covers the addresses probe_targets' functions had."""
    return build_target("reuse_targets")


@pytest.fixture(scope="session")
def reference_run():
    """The unprobed default workload run to power-off once: console, clock, tasks."""
    m = Machine()
    result = m.run()
    return {"result": result, "console": m.console, "clock": m.clock.now,
            "executed": m.clock.executed, "idle": m.clock.idle,
            "tasks": [(t.pid, t.comm, t.state, t.exit_code) for t in m.tasks()],
            "ticks": m.pit.ticks}


def pytest_collection_modifyitems(items):
    """Tests marked slow first (a stable sort keeps the rest in order): on two xdist
    workers the suite then ends with short tests on both, not one long one on its own."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
