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


def module_name(path):
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def project_modules():
    """Dotted name -> path of every module of emu and kprobes; the C extensions (named in
    setup.py) have no Python source and so no imports of their own: path None."""
    modules = {module_name(p): p for pkg in ("emu", "kprobes") for p in (ROOT / pkg).rglob("*.py")}
    for node in ast.walk(ast.parse((ROOT / "setup.py").read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Extension":
            modules[node.args[0].value] = None
    return modules


def import_graph():
    """Module -> the project modules it imports (`from X import Y` counts as X.Y when Y is
    a module, else X; relative imports resolved).  Parent packages a submodule import
    initialises are not edges: only what a module names."""
    modules = project_modules()
    graph = {}
    for name, path in modules.items():
        if path is None:
            graph[name] = set()
            continue
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                           for a in node.names]
            else:
                continue
            edges.update(t for t in targets if t in modules and t != name)
        graph[name] = edges
    return graph


def cycles(graph):
    """Every strongly connected set of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                scc.append(w)
                if w == v:
                    break
            if len(scc) > 1:
                found.append(sorted(scc))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_circle_inside_a_package():
    graph = import_graph()
    # the graph is real: it holds the edges that matter, extensions included
    assert graph["kprobes.core"] >= {"kprobes.kretprobe", "kprobes.probe"}
    assert graph["kprobes.arch.x86_64.trap"] >= {"kprobes.arch.x86_64._trap"}
    assert cycles(graph) == []


def test_the_cycle_finder_finds_cycles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_kprobes_imports_at_the_top_level_only():
    """A function-level import is how a circle hides: kprobes imports everything at the
    top of each module."""
    late = sorted(f"{p.relative_to(ROOT)}:{node.lineno}"
                  for p in (ROOT / "kprobes").rglob("*.py")
                  for fn in ast.walk(ast.parse(p.read_text(), str(p)))
                  if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
                  for node in ast.walk(fn) if isinstance(node, (ast.Import, ast.ImportFrom)))
    assert late == []


def _through_machine(node):
    """Whether an attribute chain passes through the machine (`m`, `x.m`) or its engine."""
    while isinstance(node, ast.Attribute):
        if node.attr in ("m", "engine"):
            return True
        node = node.value
    return isinstance(node, ast.Name) and node.id in ("m", "machine", "engine")


def test_kprobes_touches_no_private_machine_attribute():
    """kprobes reaches the machine only through emu.Machine's public methods."""
    private = sorted(f"{p.relative_to(ROOT)}:{node.lineno} .{node.attr}"
                     for p in (ROOT / "kprobes").rglob("*.py")
                     for node in ast.walk(ast.parse(p.read_text(), str(p)))
                     if isinstance(node, ast.Attribute) and node.attr.startswith("_")
                     and not node.attr.startswith("__") and _through_machine(node.value))
    assert private == []


def test_one_error_root():
    """Every error kpemu raises on purpose derives from KpemuError."""
    from emu import EmuError, KpemuError
    from kprobes import KprobeBug, KprobeError, KprobesError
    from kprobes.events import ProbeCommandError, ProbeSyntaxError

    for cls in (EmuError, KprobesError, KprobeError, KprobeBug, ProbeCommandError,
                ProbeSyntaxError):
        assert issubclass(cls, KpemuError), cls


def test_tests_touch_no_private_machine_attribute():
    """Tests use the public API too (ARCHITECTURE.md): no m._* nor engine._* reads."""
    private = sorted(f"{p.relative_to(ROOT)}:{node.lineno} .{node.attr}"
                     for p in (ROOT / "tests").rglob("*.py")
                     for node in ast.walk(ast.parse(p.read_text(), str(p)))
                     if isinstance(node, ast.Attribute) and node.attr.startswith("_")
                     and not node.attr.startswith("__") and _through_machine(node.value))
    assert private == []
