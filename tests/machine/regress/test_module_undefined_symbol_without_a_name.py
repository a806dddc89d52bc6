"""An undefined symbol whose st_name was 0 (no name) was skipped by symbol resolution, and
the first relocation against it failed with `KeyError` in the relocation pass (found by
mutating probe_targets.o).  Like simplify_symbols(), which looks the empty name up and does
not find it, the load fails with ENOENT before anything is allocated."""

import errno

import pytest

from emu import ModuleLoadError
from tests.machine.regress.elf_patch import patched, symbol_offset


def test_unnamed_undefined_symbol_is_unknown(machine, probe_targets_o, tmp_path):
    def unname(blob):
        at = symbol_offset(blob, lambda s: s["st_shndx"] == "SHN_UNDEF" and s.name == "fib")
        blob[at:at + 4] = bytes(4)
    bad = patched(probe_targets_o, tmp_path / "probe_targets.o", unname)
    used = machine.module_area.used_bytes
    with pytest.raises(ModuleLoadError) as info:
        machine.load_module(bad)
    assert info.value.errno == errno.ENOENT
    assert str(info.value).startswith(f"{bad}: Unknown symbol with no name (symbol ")
    assert machine.module_area.used_bytes == used and not machine.loaded_modules()
