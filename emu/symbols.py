"""kallsyms: the kernel's and loaded modules' symbols, by name and by address.

Like Linux's kallsyms, a symbol's size for `sym+0xoff/0xsize` is the distance to the next
symbol in address order (kallsyms stores no sizes), bounded by the end of its text or data
region; ELF st_size is kept too for those who want it.  Absolute symbols (the asm-offsets
layout exports) are not addresses and are not listed.

Must not import: unicorn, kprobes.
"""

import bisect
import fnmatch
from dataclasses import dataclass
from operator import attrgetter


@dataclass(frozen=True)
class Symbol:
    name: str
    addr: int
    size: int            # kallsyms size: up to the next symbol
    elf_size: int
    kind: str            # "t"/"T" text, "d"/"D" data, as /proc/kallsyms
    module: str = None   # None for the kernel

    def __str__(self):
        return self.name


_ORDER = attrgetter("addr", "name")     # address order, a name order among equals
_ELF_ORDER = attrgetter("value", "name")     # the same for ELF symbols
_INSERT_MAX = 64        # a module with more symbols has the whole order sorted again
_new_object = object.__new__


def _symbol(name, addr, size, elf_size, kind, module):
    """Symbol(...) without its frozen __init__, which sets each field through
    object.__setattr__ -- a third of building a Linux image's 32,000 symbols.  The same
    object: its fields in its __dict__."""
    sym = _new_object(Symbol)
    sym.__dict__.update(name=name, addr=addr, size=size, elf_size=elf_size, kind=kind,
                        module=module)
    return sym


class Symbols:
    def __init__(self):
        self._by_name = {}
        self._addrs = []
        self._syms = []
        self._modules = {}
        self._kernel = []

    def _rebuild(self):
        every = sorted(self._kernel + [s for syms in self._modules.values() for s in syms],
                       key=_ORDER)
        self._syms = every
        self._addrs = [s.addr for s in every]

    def load_kernel(self, image):
        syms = [s for s in image.symbols if s.section != "ABS"]
        ranges = sorted(image.sections.values())
        self._kernel = _sized(syms, [(a, a + n) for a, n, _f in ranges], module=None)
        self._by_name = {s.name: s for s in self._kernel if s.kind in "TD"}
        for s in self._kernel:
            self._by_name.setdefault(s.name, s)
        self._rebuild()

    def add_module(self, name, elf_symbols, regions):
        """Add a module's symbols (ElfSymbol-like with absolute values); `regions` are the
        (start, end) ranges its sections occupy."""
        syms = _sized(elf_symbols, regions, module=name)
        self._modules[name] = syms
        for s in syms:
            if s.kind in "TD" or s.name not in self._by_name:
                self._by_name.setdefault(s.name, s)
        if len(syms) <= _INSERT_MAX:
            # Into the order where sorted() would put them (after the equal ones already
            # there): a few insertions, not a kernel's symbols sorted again.  New lists,
            # as _rebuild() makes (a snapshot keeps the old ones).
            every, addrs = list(self._syms), list(self._addrs)
            for s in syms:
                i = bisect.bisect_right(every, _ORDER(s), key=_ORDER)
                every.insert(i, s)
                addrs.insert(i, s.addr)
            self._syms, self._addrs = every, addrs
        else:
            self._rebuild()

    def remove_module(self, name):
        for s in self._modules.pop(name, []):
            if self._by_name.get(s.name) is s:
                del self._by_name[s.name]
        self._rebuild()

    # -- lookups ---------------------------------------------------------------------

    def lookup_name(self, name):
        """Address of `name` (global symbols first, like kallsyms_lookup_name), or None.
        `MOD:SYM` looks SYM up in module MOD only, as kallsyms_lookup_name() does through
        module_kallsyms_lookup_name()."""
        sym = self._module_symbol(name) if ":" in name else self._by_name.get(name)
        return sym.addr if sym else None

    def _module_symbol(self, name):
        mod, _colon, wanted = name.partition(":")
        found = [s for s in self._modules.get(mod, ()) if s.name == wanted]
        return next((s for s in found if s.kind in "TD"), found[0] if found else None)

    def module_symbols(self, name):
        """The symbols of module `name` in address order ([] when it is not loaded)."""
        return sorted(self._modules.get(name, ()), key=_ORDER)

    def get(self, name):
        return self._by_name.get(name)

    def symbol_at(self, addr):
        """The Symbol containing `addr`, or None."""
        i = bisect.bisect_right(self._addrs, addr) - 1
        while i >= 0:
            sym = self._syms[i]
            if sym.addr <= addr < sym.addr + max(sym.size, 1):
                return sym
            if sym.addr < addr:
                return None
            i -= 1
        return None

    def lookup_addr(self, addr):
        """(name, offset, size) of the symbol containing `addr`, or None."""
        sym = self.symbol_at(addr)
        if sym is None:
            return None
        return sym.name, addr - sym.addr, sym.size

    def format(self, addr):
        """`sym+0xoff/0xsize` (with ` [module]` for module symbols), or the bare hex."""
        sym = self.symbol_at(addr)
        if sym is None:
            return f"{addr:#x}"
        text = f"{sym.name}+{addr - sym.addr:#x}/{sym.size:#x}"
        return f"{text} [{sym.module}]" if sym.module else text

    def __iter__(self):
        return iter(self._syms)

    def __len__(self):
        return len(self._syms)

    def match(self, pattern):
        """Symbols whose name matches a shell-style pattern, in address order."""
        return [s for s in self._syms if fnmatch.fnmatchcase(s.name, pattern)]

    def functions(self):
        return [s for s in self._syms if s.kind in "tT"]


def _sized(elf_symbols, regions, module):
    """Turn ELF symbols into kallsyms entries sized up to the next symbol."""
    syms = sorted(elf_symbols, key=_ELF_ORDER)
    starts = sorted({s.value for s in syms})
    ordered = sorted(regions)
    disjoint = all(e <= a for (_, e), (a, _) in zip(ordered, ordered[1:]))
    region_starts = [a for a, _ in ordered]
    out = []
    for s in syms:
        nxt = bisect.bisect_right(starts, s.value)
        end = starts[nxt] if nxt < len(starts) else None
        if disjoint:        # the one region that can hold it: the last starting at or below
            i = bisect.bisect_right(region_starts, s.value) - 1
            region_end = ordered[i][1] if i >= 0 and s.value < ordered[i][1] else None
        else:
            region_end = next((e for a, e in regions if a <= s.value < e), None)
        if region_end is not None and (end is None or end > region_end):
            end = region_end
        size = (end - s.value) if end is not None else s.size
        kind = "T" if s.executable else "D"
        if s.bind == "STB_LOCAL":
            kind = kind.lower()
        out.append(_symbol(s.name, s.value, size, s.size, kind, module))
    return out
