"""The fuzz campaign's fixtures and summary.

`make test` runs the short form: SHORT inputs per category (tests/fuzz/harness.py), with
derandomized hypothesis, so every run tries the same inputs.  `make fuzz` sets
KPEMU_FUZZ_EXAMPLES and runs that many fresh random inputs per category, then prints the
figures (inputs, clean errors, results, slowest input, largest heap peak per category).
"""

from pathlib import Path

import pytest

from tests.conftest import compile_module
from tests.fuzz import harness

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def module_seeds(tmp_path_factory, probe_targets_o):
    """The test modules, built like the other tests build them: probe_targets.c and the
    kprobes targets in assembly."""
    out = tmp_path_factory.mktemp("fuzz-seeds")
    built = [probe_targets_o] + [compile_module(ROOT / "kprobes" / "targets" / name, out)
                                 for name in ("resume_targets.S", "ret_targets.S")]
    return [p.read_bytes() for p in built]


def pytest_terminal_summary(terminalreporter):
    lines = harness.summary_lines()
    if lines:
        terminalreporter.section("kpemu fuzz campaign")
        for line in lines:
            terminalreporter.write_line(line)
