"""The events package's modules follow Linux's files and import one way:
errors <- ring_buffer <- trace_probe <- trace_output <- trace_kprobe, at top level only, and the kprobes
core only through the package top level."""

import ast
from pathlib import Path

import pytest

EVENTS = Path(__file__).resolve().parents[2] / "kprobes" / "events"
ORDER = ["errors", "ring_buffer", "trace_probe", "trace_output", "trace_kprobe"]


def _imports(name):
    tree = ast.parse((EVENTS / f"{name}.py").read_text())
    top = set(tree.body)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{name}: relative import"
            found.append((node.module, node in top))
    return found


@pytest.mark.parametrize("name", ORDER)
def test_events_modules_import_one_way(name):
    imports = _imports(name)
    assert [mod for mod, at_top in imports if not at_top] == []
    below = {f"kprobes.events.{m}" for m in ORDER[:ORDER.index(name)]}
    ours = [mod for mod, _ in imports if mod.split(".")[0] in ("kprobes", "emu")]
    events = [mod for mod in ours if mod.startswith("kprobes.events")]
    assert set(events) <= below, f"{name} imports {set(events) - below}"
    # the kprobes core by its package name only; no unicorn anywhere
    assert {mod for mod in ours if mod.startswith("kprobes")} - set(events) <= {"kprobes"}
    assert not any(mod.split(".")[0] == "unicorn" for mod, _ in imports)


def test_errors_imports_nothing_of_kpemu_but_the_error_root():
    assert [mod for mod, _ in _imports("errors")
            if mod.split(".")[0] in ("kprobes", "emu")] == ["kprobes"]


def test_every_module_says_what_it_mirrors_and_must_not_import():
    for name in ORDER:
        doc = ast.get_docstring(ast.parse((EVENTS / f"{name}.py").read_text()))
        assert "Must not import:" in doc, name
        assert "Linux" in doc, name
