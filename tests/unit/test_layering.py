"""The layers point one way: kprobes -> emu -> unicorn."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def imports_of(path):
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


def test_emu_never_imports_kprobes():
    offenders = [(p.name, mod) for p in (ROOT / "emu").rglob("*.py")
                 for mod in imports_of(p) if mod.split(".")[0] == "kprobes"]
    assert offenders == []


def test_only_the_engine_imports_unicorn():
    users = sorted(str(p.relative_to(ROOT)) for pkg in ("emu", "kprobes")
                   for p in (ROOT / pkg).rglob("*.py")
                   if any(m.split(".")[0] == "unicorn" for m in imports_of(p)))
    assert users == ["emu/engine.py"]
