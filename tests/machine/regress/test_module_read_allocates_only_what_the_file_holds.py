"""Reading a module asked for MODULE_MAX_SIZE + 1 bytes, and read(n) allocates n bytes up
front: every load of a 7 KB object cost a 64 MiB allocation (found by the fuzz campaign's
memory bound).  The read asks for the size fstat() gave, plus one byte."""

import tracemalloc

from emu.modules import MODULE_MAX_SIZE


def test_loading_a_small_module_allocates_little(machine, probe_targets_o):
    tracemalloc.start()
    try:
        mod = machine.load_module(probe_targets_o)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    machine.unload_module(mod)
    assert peak < 8 << 20 < MODULE_MAX_SIZE
