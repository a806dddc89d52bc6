"""Regression: `kpemu symbols` could not show a module's symbols."""

import io

from emu import Machine
from kprobes.cli import main


def run(*argv):
    out, err = io.StringIO(), io.StringIO()
    return main(list(argv), out, err), out.getvalue(), err.getvalue()


def test_kpemu_symbols_shows_module_symbols(probe_targets_o, init_targets_o):
    status, out, err = run("symbols", "--module", str(probe_targets_o),
                           "--module", str(init_targets_o))
    assert (status, err) == (0, "")
    # the addresses a boot with the same --module options loads them at
    m = Machine()
    for path in (probe_targets_o, init_targets_o):
        m.load_module(path)
    want = [s for mod in ("probe_targets", "init_targets")
            for s in m.symbols.module_symbols(mod)]
    assert out == "".join(f"{s.addr:016x} {s.kind} {s.name} {s.size:#x} [{s.module}]\n"
                          for s in want)
    assert "mod_bump" in out and "init_module" in out and "fib" not in out.split()
    status, out, err = run("symbols", "mod_b*", "--module", str(probe_targets_o))
    assert status == 0 and [ln.split()[2::2] for ln in out.splitlines()] == \
        [["mod_bump", "[probe_targets]"]]
    status, out, err = run("symbols", "zzz*", "--module", str(probe_targets_o))
    assert (status, out) == (2, "") and \
        err == f"kpemu: no symbol matches 'zzz*' in {probe_targets_o}\n"
