"""Fuzz the module loader: structured mutations of the test modules (probe_targets.c and the
kprobes targets in assembly), each loaded into a booted machine like insmod and unloaded.

Every input ends in a ModuleLoadError naming the file that left nothing behind (no area
allocation, no symbol, no byte of the module area written), or in a module that loaded,
is listed, and unloads to the state before it."""

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emu import Machine, ModuleLoadError
from tests.fuzz import mutations as mu
from tests.fuzz import strategies as fs
from tests.fuzz.harness import fuzz_settings, run_input

# Where modules are placed: the start of the module area (after m.call's landing pad).
WATCHED = 0x40000


@pytest.fixture(scope="module")
def machine_and_dir(tmp_path_factory):
    m = Machine()
    m.boot()
    return m, tmp_path_factory.mktemp("fuzz-module")


class Seeds(list):
    """(seed, its mutations strategy) pairs, with a repr short enough for a failure report."""

    def __repr__(self):
        return f"<{len(self)} module seeds>"


@pytest.fixture(scope="module")
def seed_strategies(module_seeds):
    return Seeds((seed, fs.elf_ops(seed)) for seed in module_seeds)


def state(m):
    area = m.module_area
    return (area.used_bytes, len(m.symbols), len(m.loaded_modules()),
            hashlib.sha1(m.read(area.start, WATCHED)).digest())


def load_and_unload(m, path):
    before = state(m)
    try:
        mod = m.load_module(path)
    except ModuleLoadError as exc:
        assert state(m) == before, f"a failed load left something behind: {exc}"
        assert str(exc).startswith(f"{path}: ")
        raise
    assert m.loaded_modules() == [mod] and mod.size > 0
    assert all(m.symbols.lookup_name(s.name) is not None for s in mod.symbols)
    m.unload_module(mod)
    assert state(m)[:3] == before[:3]
    return mod


@fuzz_settings("module")
@given(data=st.data())
def test_module_loader(machine_and_dir, seed_strategies, data):
    m, workdir = machine_and_dir
    index = data.draw(st.integers(0, len(seed_strategies) - 1), label="seed")
    seed, ops_strategy = seed_strategies[index]
    ops = data.draw(ops_strategy, label="mutations")
    path = workdir / "fuzz.o"
    path.write_bytes(mu.apply(seed, ops))
    run_input("module", lambda: load_and_unload(m, path))
