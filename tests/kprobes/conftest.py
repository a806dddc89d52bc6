import shutil
import subprocess
from pathlib import Path

import pytest

from kprobes.arch.x86_64 import trap as arch_trap

TARGETS = Path(__file__).resolve().parent / "targets"


def _assemble(tmp_path_factory, name):
    if shutil.which("gcc") is None:
        pytest.skip("gcc not installed: cannot assemble the test module")
    out = tmp_path_factory.mktemp("targets") / f"{name}.o"
    subprocess.run(["gcc", "-c", "-o", str(out), str(TARGETS / f"{name}.S")], check=True)
    return out


@pytest.fixture(scope="session")
def resume_targets_o(tmp_path_factory):
    return _assemble(tmp_path_factory, "resume_targets")


@pytest.fixture(scope="session")
def ret_targets_o(tmp_path_factory):
    return _assemble(tmp_path_factory, "ret_targets")


@pytest.fixture(autouse=True, params=["c-path", "python-path"])
def trap_path(request, monkeypatch):
    """Every kprobes test runs on both trap paths: the C bookkeeping of the plain hit
    (kprobes/arch/x86_64/trap.c, the default) and the Python reference for every trap."""
    monkeypatch.setattr(arch_trap, "TRAP_FASTPATH", request.param == "c-path")
    return request.param


@pytest.fixture
def km(machine, kprobes):
    """(machine, kprobes): the plugin's fresh booted machine and its Kprobes."""
    return machine, kprobes


def sym(m, name):
    return m.symbols.lookup_name(name)


@pytest.fixture
def rm(km, ret_targets_o):
    """km with the return-probe targets module (tests/kprobes/targets/ret_targets.S)."""
    m, k = km
    m.load_module(ret_targets_o)
    return m, k
