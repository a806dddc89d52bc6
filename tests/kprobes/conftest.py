import shutil
import subprocess
from pathlib import Path

import pytest

from emu import Machine
from kprobes import Kprobes

TARGETS = Path(__file__).resolve().parent / "targets"


@pytest.fixture(scope="session")
def resume_targets_o(tmp_path_factory):
    if shutil.which("gcc") is None:
        pytest.skip("gcc not installed: cannot assemble the test module")
    out = tmp_path_factory.mktemp("rt") / "resume_targets.o"
    subprocess.run(["gcc", "-c", "-o", str(out), str(TARGETS / "resume_targets.S")],
                   check=True)
    return out


@pytest.fixture(scope="session")
def ret_targets_o(tmp_path_factory):
    if shutil.which("gcc") is None:
        pytest.skip("gcc not installed: cannot assemble the test module")
    out = tmp_path_factory.mktemp("rt") / "ret_targets.o"
    subprocess.run(["gcc", "-c", "-o", str(out), str(TARGETS / "ret_targets.S")],
                   check=True)
    return out


@pytest.fixture
def km():
    """(machine, kprobes): kprobes installed before boot, as ARCHITECTURE.md shows."""
    m = Machine()
    k = Kprobes(m)
    m.boot()
    return m, k
