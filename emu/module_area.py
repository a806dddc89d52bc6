"""The module area: executable kernel memory within +-2 GiB of kernel text, as Linux's
module_alloc() gives.  The image reserves it (__module_area_start .. __module_area_end, mapped
by the kernel's own page tables, never touched by the guest); the host carves modules and
kprobe instruction slots out of it.

A first-fit allocator over page-granular or finer blocks; allocations never overlap, freed
space is merged.  Must not import: unicorn, kprobes.
"""

from emu.errors import EmuError


class AreaFull(EmuError):
    pass


class ModuleArea:
    def __init__(self, start, end):
        self.start = start
        self.end = end
        self._free = [(start, end)]          # sorted, disjoint [a, b) ranges
        self._used = {}                      # va -> size

    def alloc(self, size, align=16, tag=None):
        """Address of `size` fresh bytes aligned to `align`; AreaFull when none is left."""
        if size <= 0:
            size = 1
        for i, (a, b) in enumerate(self._free):
            va = (a + align - 1) & ~(align - 1)
            if va + size <= b:
                pieces = []
                if va > a:
                    pieces.append((a, va))
                if va + size < b:
                    pieces.append((va + size, b))
                self._free[i:i + 1] = pieces
                self._used[va] = size
                return va
        raise AreaFull(f"module area exhausted: no {size} bytes aligned to {align} left "
                       f"in {self.start:#x}-{self.end:#x}")

    def free(self, va):
        size = self._used.pop(va)
        self._free.append((va, va + size))
        self._free.sort()
        merged = []
        for a, b in self._free:
            if merged and merged[-1][1] == a:
                merged[-1] = (merged[-1][0], b)
            else:
                merged.append((a, b))
        self._free = merged

    def contains(self, va):
        return self.start <= va < self.end

    def state(self):
        """What is free and what is used, a copy (for a snapshot)."""
        return list(self._free), dict(self._used)

    def set_state(self, state):
        """Back to what state() returned (a snapshot's restore); the state stays reusable."""
        free, used = state
        self._free, self._used = list(free), dict(used)

    @property
    def used_bytes(self):
        return sum(self._used.values())
