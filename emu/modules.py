"""Kernel modules: insmod and rmmod for relocatable ELF64 x86_64 objects.

Owns what Linux's load_module() and free_module() do for an object built with
`gcc -c -mcmodel=kernel -mno-red-zone -fno-pic`: checking the file, laying its allocated
sections out in one block carved from the module area (module_alloc), resolving its undefined
symbols through kallsyms, applying its RELA relocations (the recipes live in
emu.reloc_x86_64), writing the block into guest memory (text through text_poke, so no stale
translated code survives) and adding or removing the module's symbols in kallsyms.  Like
do_init_module() and delete_module() it also runs the module's own code: its `.init_array`
constructors and init_module() once it is in place, cleanup_module() before it goes, through
the machine's m.call (the guest clock does not move).

Every failure is one ModuleLoadError naming the file, with the errno Linux returns; a failed
load leaves nothing behind: no area allocation, no symbol, and every notifier that saw the
module come has seen it go.  A load that fails before the block is written (a bad file, an
unknown symbol, a full area, a bad relocation) writes nothing to guest memory; once it is
written (a notifier refuses the module, its init fails) the block is poisoned and freed as
at rmmod.

Must not import: unicorn, kprobes.
"""

import errno
import io
import os
import struct
import warnings
from dataclasses import dataclass

from elftools.common.exceptions import ELFError
from elftools.elf.constants import SH_FLAGS
from elftools.elf.elffile import ELFFile

from emu import elfcheck, reloc_x86_64
from emu.errors import GuestFault, ModuleLoadError
from emu.image import ElfSymbol
from emu.module_area import AreaFull

PAGE_SIZE = 0x1000
POISON = 0xCC                  # INT3 in freed text; a non-canonical pointer in freed data

SHF_WRITE = SH_FLAGS.SHF_WRITE
SHF_ALLOC = SH_FLAGS.SHF_ALLOC
SHF_EXECINSTR = SH_FLAGS.SHF_EXECINSTR

# Module states (include/linux/module.h): what ModuleLoader.notifiers are told, and
# Module.state.  COMING: in place, its init not run yet; LIVE: its init has run; GOING: on
# its way out (or its init failed).
MODULE_STATE_LIVE = "MODULE_STATE_LIVE"
MODULE_STATE_COMING = "MODULE_STATE_COMING"
MODULE_STATE_GOING = "MODULE_STATE_GOING"

# The module's own entry points, as module_init()/module_exit() name them.
INIT_FUNCTION = "init_module"
EXIT_FUNCTION = "cleanup_module"
INIT_ARRAY = ".init_array"

_ELF64_RELA_SIZE = 24
# Four times the 16 MiB module area: what is loaded must fit the area, the rest of a file
# is debug info and symbols, which even a big driver built with -g keeps under this.
MODULE_MAX_SIZE = 64 << 20
_KALLSYMS_TYPES = ("STT_FUNC", "STT_OBJECT", "STT_NOTYPE")


@dataclass
class Module:
    name: str
    path: str
    base: int                # load_addr of the block; the first text section starts here
    size: int
    sections: dict           # name -> (addr, size, flags) of each non-empty allocated section
    symbols: list            # emu.image.ElfSymbol with absolute values, as handed to kallsyms
    text_ranges: list        # (start, end) of each executable section
    state: str = MODULE_STATE_COMING
    init_ret: int = None     # what init_module() returned, once it has run

    def contains(self, addr):
        return self.base <= addr < self.base + self.size

    def function(self, name):
        """load_addr of the module's global function `name`, or None (module_init() and
        module_exit() make init_module and cleanup_module global aliases)."""
        return next((s.value for s in self.symbols if s.name == name and s.executable
                     and s.bind in ("STB_GLOBAL", "STB_WEAK")), None)

    def constructor_tables(self):
        """(load_addr, size) of the constructor tables in the order do_mod_ctors() runs
        them: `.init_array.N` by name (the priority ones), then `.init_array`, as the
        kernel's module linker script merges them."""
        tables = [(key.split("#")[0], addr, size) for key, (addr, size, _f)
                  in self.sections.items() if key.split("#")[0] == INIT_ARRAY
                  or key.startswith(INIT_ARRAY + ".")]
        return [(addr, size) for _name, addr, size in
                sorted(tables, key=lambda t: (t[0] == INIT_ARRAY, t[0], t[1]))]


@dataclass
class _Section:
    index: int
    name: str
    sh_type: str
    flags: int
    file_offset: int
    size: int
    align: int
    link: int
    info: int
    entsize: int
    offset: int = None       # within the module's block, once laid out

    @property
    def allocated(self):
        return bool(self.flags & SHF_ALLOC)


@dataclass
class _Sym:
    name: str
    value: int
    size: int
    kind: str
    bind: str
    shndx: object            # a section index, or "SHN_UNDEF" / "SHN_ABS" / "SHN_COMMON"


@dataclass
class _Object:
    """What the loader needs from the file, read once with pyelftools into plain data."""
    sections: list
    symbols: list            # by symbol table index; index 0 is the null symbol
    relas: list              # (rela section, target section, [(r_offset, type, sym, addend)])


def module_name(path):
    """Linux's name for a module built from `path`: the basename without .o/.ko, with '-'
    turned into '_' as KBUILD_MODNAME does."""
    base = os.path.basename(path)
    for suffix in (".ko", ".o"):
        if base.endswith(suffix):
            base = base[:-len(suffix)]
            break
    return base.replace("-", "_")


class ModuleLoader:
    """insmod/rmmod.  `notifiers` are callables fn(state, mod) (like
    register_module_notifier(), e.g. for kprobes to drop probes in module text), told
    MODULE_STATE_COMING once a module is in place, before its init runs (so a probe on init
    code fires), MODULE_STATE_LIVE after its init, MODULE_STATE_GOING after its cleanup,
    before it is freed -- or when its init failed.

    `call(load_addr) -> rax` runs a guest function (the machine's m.call); until start()
    gives it, nothing can run guest code, and a module loaded then stays COMING with its
    init pending -- start() runs those inits, like the initcalls of built-in code at boot."""

    def __init__(self, mem, symbols, area):
        self.mem = mem
        self.symbols = symbols
        self.area = area
        self.modules = {}
        self.notifiers = []
        self.call = None

    def load(self, path, name=None):
        """Load a relocatable object like insmod and return its Module.

        1. Read the file and check its ELF header: ELF64, little-endian, x86_64, ET_REL.
        2. Refuse a name that is already loaded (EEXIST).
        3. Resolve every undefined symbol through kallsyms (ENOENT), before anything is
           allocated, like simplify_symbols().
        4. Lay out the allocated sections, text first, then COMMON symbols, and allocate the
           block from the module area (ENOMEM).
        5. Build the block on the host and apply the relocations there (ENOEXEC); guest
           memory is untouched until every relocation has succeeded.
        6. Write the block into guest memory, the text through text_poke.
        7. Add the module's symbols to kallsyms and tell the notifiers it is COMING.
        8. When guest code can run (see start()), run its init (_init_module()); a failed
           init fails the load.
        """
        path = os.fspath(path)
        blob = _read_file(path)
        obj = _parse(path, blob)
        name = module_name(path) if name is None else name
        if not name:
            raise ModuleLoadError(f"{path}: empty module name", errno.EINVAL)
        if name in self.modules:
            raise ModuleLoadError(f"{path}: module {name} is already loaded", errno.EEXIST)
        undef = self._resolve_undefined(path, obj)

        placed, common, size, align = _layout(path, obj)
        try:
            base = self.area.alloc(size, align=align, tag=name)
        except AreaFull:
            raise ModuleLoadError(f"{path}: cannot allocate {size:#x} bytes for module {name}: "
                                  "module area full", errno.ENOMEM) from None
        try:
            block = _build_block(path, blob, obj, placed, common, undef, base, size)
            mod = _describe(name, path, obj, placed, common, base, size)
            _store(self.mem, base, block, mod.text_ranges)
        except BaseException:
            self.area.free(base)
            raise

        self.symbols.add_module(name, mod.symbols, [(a, a + n) for a, n, _f
                                                    in mod.sections.values()])
        self.modules[name] = mod
        told = 0
        try:
            for notify in self.notifiers:
                notify(MODULE_STATE_COMING, mod)
                told += 1
        except BaseException:
            # A notifier refused the module: the ones told before it hear it go and the
            # load is undone, as prepare_coming_module() does with the robust notifier chain.
            self._going(mod, self.notifiers[:told])
            raise
        if self.call is not None:
            self._init_module(mod)
        return mod

    def start(self, call):
        """From now on guest code runs through `call(load_addr) -> rax` (the machine has
        booted): the inits of the modules loaded before run now, in load order.  A module
        whose init fails is unloaded; the first failure is raised once every pending init
        has run."""
        self.call = call
        failures = []
        for mod in list(self.modules.values()):
            if mod.state == MODULE_STATE_COMING:
                try:
                    self._init_module(mod)
                except ModuleLoadError as exc:
                    failures.append(exc)
        if failures:
            raise failures[0]

    def _init_module(self, mod):
        """do_init_module(): the constructors (do_mod_ctors()), then init_module().  A
        negative return fails the load with that errno, a positive one loads it anyway
        with Linux's warning; a guest fault fails it with EFAULT (Linux would oops and
        leave the module half-initialised).  On failure the notifiers hear it GOING and
        the module is freed; on success they hear it LIVE."""
        try:
            for table, size in mod.constructor_tables():
                for (ctor,) in struct.iter_unpack("<Q", self.mem.read(table, size - size % 8)):
                    if ctor:
                        self.call(ctor)
            init = mod.function(INIT_FUNCTION)
            ret = 0 if init is None else _c_int(self.call(init))
        except GuestFault as exc:
            self._going(mod, self.notifiers)
            raise ModuleLoadError(f"{mod.path}: the init of module {mod.name} faulted: "
                                  f"{exc.oops.summary()}", errno.EFAULT) from exc
        except BaseException:
            self._going(mod, self.notifiers)
            raise
        mod.init_ret = ret
        if ret < 0:
            self._going(mod, self.notifiers)
            raise ModuleLoadError(f"{mod.path}: {INIT_FUNCTION} of module {mod.name} "
                                  f"returned {ret}: {os.strerror(-ret)}", -ret)
        if ret > 0:
            warnings.warn(f"do_init_module: '{mod.name}'->init suspiciously returned {ret}, "
                          "it should follow 0/-E convention; loading module anyway...",
                          RuntimeWarning, stacklevel=3)
        mod.state = MODULE_STATE_LIVE
        for notify in self.notifiers:
            notify(MODULE_STATE_LIVE, mod)

    def unload(self, mod):
        """Unload a module (a Module or its name) like rmmod: its cleanup_module() runs
        (if its init has run), then the notifiers see it GOING, then its symbols leave
        kallsyms and its memory is poisoned and freed.  Like delete_module(), a live module
        with an init_module() but no cleanup_module() cannot be unloaded (EBUSY).  A fault
        or exception in cleanup_module() is raised once the module is gone (a fault as a
        ModuleLoadError with EFAULT)."""
        name = mod if isinstance(mod, str) else mod.name
        loaded = self.modules.get(name)
        if loaded is None or (not isinstance(mod, str) and loaded is not mod):
            raise ModuleLoadError(f"module {name} is not loaded", errno.ENOENT)
        error = None
        if loaded.state == MODULE_STATE_LIVE:
            cleanup = loaded.function(EXIT_FUNCTION)
            if cleanup is None and loaded.function(INIT_FUNCTION) is not None:
                raise ModuleLoadError(f"module {name} has an {INIT_FUNCTION}() but no "
                                      f"{EXIT_FUNCTION}(): it cannot be unloaded", errno.EBUSY)
            loaded.state = MODULE_STATE_GOING
            if cleanup is not None:
                try:
                    self.call(cleanup)
                except GuestFault as exc:
                    error = ModuleLoadError(f"module {name}: {EXIT_FUNCTION}() faulted: "
                                            f"{exc.oops.summary()}", errno.EFAULT)
                    error.__cause__ = exc
                except BaseException as exc:  # noqa: BLE001 - re-raised once it is gone
                    error = exc
        self._going(loaded, self.notifiers)
        if error is not None:
            raise error

    def _going(self, mod, notifiers):
        """Tell `notifiers` the module is GOING, then free it."""
        mod.state = MODULE_STATE_GOING
        try:
            for notify in notifiers:
                notify(MODULE_STATE_GOING, mod)
        finally:
            self._discard(mod)

    def _discard(self, mod):
        self.symbols.remove_module(mod.name)
        del self.modules[mod.name]
        # Poison before freeing so a stale call or pointer into the module traps at once
        # instead of running whatever is placed there next; text_poke drops translated blocks.
        _store(self.mem, mod.base, bytes([POISON]) * mod.size, mod.text_ranges)
        self.area.free(mod.base)

    def _resolve_undefined(self, path, obj):
        """Symbol index -> address for every undefined symbol.  Unknown weak symbols resolve
        to 0, as in simplify_symbols(); any other unknown one fails the load with ENOENT."""
        undef = {}
        unknown = []
        for idx, sym in enumerate(obj.symbols):
            if idx == 0 or sym.shndx != "SHN_UNDEF":
                continue
            # An undefined symbol without a name is looked up as "" and not found, as
            # simplify_symbols() does; a relocation against it must not go unresolved.
            addr = self.symbols.lookup_name(sym.name) if sym.name else None
            if addr is None:
                if sym.bind != "STB_WEAK":
                    unknown.append(sym.name or f"with no name (symbol {idx})")
                addr = 0
            undef[idx] = addr
        if unknown:
            more = f" (also {', '.join(unknown[1:])})" if len(unknown) > 1 else ""
            raise ModuleLoadError(f"{path}: Unknown symbol {unknown[0]}{more}", errno.ENOENT)
        return undef


def _c_int(rax):
    """An int return value as C sees it: the low 32 bits of rax, signed."""
    value = rax & 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


# -- reading the object ------------------------------------------------------------------

def _read_file(path):
    """The whole object, read only if it is a regular file of at most MODULE_MAX_SIZE bytes
    (a device or a FIFO could never end; a forged 2 GB file is refused unread)."""
    fail = _failure(path)
    f, size = elfcheck.open_regular(path, "module", fail)
    try:
        with f:
            elfcheck.check_size(f, size, MODULE_MAX_SIZE, "module", fail)
            # As many bytes as fstat() said, and one more to catch a file that grew since
            # (read(n) allocates n bytes up front: never ask for the limit itself).
            f.seek(0)
            blob = f.read(size + 1)
    except OSError as exc:
        raise ModuleLoadError(f"{path}: cannot read: {exc.strerror}", exc.errno) from None
    if len(blob) > MODULE_MAX_SIZE:
        raise ModuleLoadError(f"{path}: larger than the {elfcheck.size_text(MODULE_MAX_SIZE)} "
                              "kpemu accepts for a module", errno.EFBIG)
    return blob


def _parse(path, blob):
    """Check the header (like elf_validity_check()) and read sections, symbols and the
    relocations that apply to allocated sections; ELFError never escapes."""
    if blob[:4] != b"\x7fELF":
        raise ModuleLoadError(f"{path}: not an ELF file", errno.ENOEXEC)
    if len(blob) > 4 and blob[4] != 2:
        kind = "ELF32" if blob[4] == 1 else f"ELF class {blob[4]}"
        raise ModuleLoadError(f"{path}: {kind} object; modules must be ELF64 x86_64",
                              errno.ENOEXEC)
    if len(blob) < 64:
        raise ModuleLoadError(f"{path}: truncated ELF header ({len(blob)} bytes)",
                              errno.ENOEXEC)
    if blob[5] != 1:
        raise ModuleLoadError(f"{path}: big-endian ELF; modules must be little-endian x86_64",
                              errno.ENOEXEC)
    try:
        return _read_object(path, blob)
    except ELFError as exc:
        raise ModuleLoadError(f"{path}: malformed ELF: {exc}", errno.ENOEXEC) from None


def _failure(path):
    """emu.elfcheck's `fail` for this file: its message as a ModuleLoadError."""
    def fail(message, err):
        return ModuleLoadError(f"{path}: {message}", err)
    return fail


def _malformed(path, what):
    return ModuleLoadError(f"{path}: malformed ELF: {what}", errno.ENOEXEC)


def _read_object(path, blob):
    stream = io.BytesIO(blob)
    fail = _failure(path)
    raw_sections = elfcheck.check_headers(stream, len(blob), fail)
    elf = ELFFile(stream)
    if elf["e_machine"] != "EM_X86_64":
        raise ModuleLoadError(f"{path}: ELF for machine {elf['e_machine']}; modules must be "
                              "x86_64 (EM_X86_64)", errno.ENOEXEC)
    if elf["e_type"] != "ET_REL":
        raise ModuleLoadError(f"{path}: ELF type {elf['e_type']}; a module must be a "
                              "relocatable object (ET_REL, built with gcc -c)", errno.ENOEXEC)
    if not raw_sections:
        raise ModuleLoadError(f"{path}: truncated: section headers end past the file's "
                              f"{len(blob):#x} bytes", errno.ENOEXEC)

    sections = []
    for index, sec in enumerate(elf.iter_sections()):
        align = sec["sh_addralign"] or 1
        if align & (align - 1):
            raise _malformed(path, f"section {sec.name} alignment {align} is not a power of 2")
        s = _Section(index, sec.name, sec["sh_type"], sec["sh_flags"], sec["sh_offset"],
                     sec["sh_size"], align, sec["sh_link"], sec["sh_info"], sec["sh_entsize"])
        sections.append(s)

    symtab_index = next((s.index for s in sections if s.sh_type == "SHT_SYMTAB"), None)
    symbols = []
    if symtab_index is not None:
        elfcheck.check_symtab(stream, raw_sections, symtab_index, fail)
        for sym in elf.get_section(symtab_index).iter_symbols():
            shndx = sym["st_shndx"]
            if isinstance(shndx, int) and not 0 < shndx < len(sections):
                raise _malformed(path, f"symbol {sym.name!r} in section index {shndx}")
            if not isinstance(shndx, int) and shndx not in ("SHN_UNDEF", "SHN_ABS",
                                                            "SHN_COMMON"):
                raise _malformed(path, f"symbol {sym.name!r} in unsupported section {shndx}")
            info = sym["st_info"]
            symbols.append(_Sym(sym.name, sym["st_value"], sym["st_size"], info["type"],
                                info["bind"], shndx))

    relas = []
    for s in sections:
        if s.sh_type not in ("SHT_RELA", "SHT_REL"):
            continue
        if not 0 < s.info < len(sections):
            raise _malformed(path, f"{s.name} applies to section index {s.info}")
        target = sections[s.info]
        if not target.allocated:
            continue     # debug info and other sections that never reach guest memory
        if s.sh_type == "SHT_REL":
            # x86_64 modules carry addends in RELA; Linux's apply_relocate() refuses REL.
            raise ModuleLoadError(f"{path}: REL relocation section {s.name} unsupported",
                                  errno.ENOEXEC)
        if s.link != symtab_index or s.entsize != _ELF64_RELA_SIZE:
            raise _malformed(path, f"{s.name} does not refer to the symbol table")
        entries = [(r["r_offset"], r["r_info_type"], r["r_info_sym"], r["r_addend"])
                   for r in elf.get_section(s.index).iter_relocations()]
        relas.append((s, target, entries))
    return _Object(sections, symbols, relas)


# -- layout and relocation -----------------------------------------------------------------

def _layout_rank(s):
    """Like layout_sections(): executable, then read-only, then writable; zero-filled
    sections last among the writable ones so the data stays contiguous."""
    if s.flags & SHF_EXECINSTR:
        return 0
    if not s.flags & SHF_WRITE:
        return 1
    return 3 if s.sh_type == "SHT_NOBITS" else 2


def _align_up(value, align):
    return (value + align - 1) & ~(align - 1)


def _layout(path, obj):
    """Give every allocated section and COMMON symbol its offset in the block.

    Returns (placed: section index -> _Section, common: symbol index -> offset, size, align).
    Empty sections get an offset too (a symbol may sit at their start) but no room.
    """
    placed = {}
    offset = 0
    max_align = 1
    for s in sorted((s for s in obj.sections if s.allocated),
                    key=lambda s: (_layout_rank(s), s.index)):
        offset = _align_up(offset, s.align)
        s.offset = offset
        offset += s.size
        max_align = max(max_align, s.align)
        placed[s.index] = s
    # Linux refuses COMMON symbols ("please compile with -fno-common"); kpemu does the
    # linker's part instead and gives them room after .bss, each with its alignment (st_value).
    common = {}
    for idx, sym in enumerate(obj.symbols):
        if sym.shndx != "SHN_COMMON":
            continue
        align = sym.value or 1
        if align & (align - 1):
            raise _malformed(path, f"COMMON symbol {sym.name} alignment {align}")
        offset = _align_up(offset, align)
        common[idx] = offset
        offset += sym.size
        max_align = max(max_align, align)
    # module_alloc() hands out whole pages; text starts the block, page-aligned.
    return placed, common, max(offset, 1), max(max_align, PAGE_SIZE)


def _build_block(path, blob, obj, placed, common, undef, base, size):
    """The module's bytes as they will be in guest memory, relocations applied."""
    block = bytearray(size)
    for s in placed.values():
        if s.sh_type != "SHT_NOBITS":
            block[s.offset:s.offset + s.size] = blob[s.file_offset:s.file_offset + s.size]

    def symbol_address(idx, where):
        if idx == 0:
            return 0                  # the null symbol: S = 0
        if idx >= len(obj.symbols):
            raise _malformed(path, f"{where}: symbol index {idx} out of range")
        sym = obj.symbols[idx]
        if sym.shndx == "SHN_UNDEF":
            return undef[idx]
        if sym.shndx == "SHN_ABS":
            return sym.value
        if sym.shndx == "SHN_COMMON":
            return base + common[idx]
        sec = placed.get(sym.shndx)
        if sec is None:
            raise ModuleLoadError(f"{path}: {where}: relocation against "
                                  f"{sym.name or obj.sections[sym.shndx].name} in "
                                  f"non-allocated section {obj.sections[sym.shndx].name}",
                                  errno.ENOEXEC)
        return base + sec.offset + sym.value

    # Like apply_relocate_add(): one pass over each RELA section of an allocated section.
    for rela, target, entries in obj.relas:
        if target.sh_type == "SHT_NOBITS":
            raise _malformed(path, f"{rela.name} relocates zero-filled section {target.name}")
        for r_offset, rtype, symidx, addend in entries:
            where = f"{target.name}+{r_offset:#x}"
            S = symbol_address(symidx, where)
            P = base + target.offset + r_offset
            try:
                value = reloc_x86_64.apply(rtype, S, addend, P)
            except ModuleLoadError as exc:
                sym = obj.symbols[symidx].name if symidx else ""
                against = f" against {sym}" if sym else ""
                hint = ("; likely not compiled with -mcmodel=kernel"
                        if "overflow" in str(exc) else "")
                raise ModuleLoadError(f"{path}: {exc} at {where}{against}{hint}",
                                      exc.errno) from None
            if r_offset + len(value) > target.size:
                raise _malformed(path, f"relocation at {where} beyond the section's "
                                       f"{target.size:#x} bytes")
            place = target.offset + r_offset
            # RELA leaves the place zero; anything else means a corrupt object or a
            # relocation applied twice (Linux: "Invalid relocation target").
            if any(block[place:place + len(value)]):
                raise ModuleLoadError(f"{path}: Invalid relocation target at {where}, "
                                      f"existing value is nonzero for type {rtype}",
                                      errno.ENOEXEC)
            block[place:place + len(value)] = value
    return block


def _describe(name, path, obj, placed, common, base, size):
    """The Module record: its sections, its kallsyms symbols (locals too, as kallsyms keeps
    them) and its text ranges."""
    sections = {}
    text_ranges = []
    for s in sorted(placed.values(), key=lambda s: s.offset):
        if not s.size:
            continue
        key = s.name if s.name not in sections else f"{s.name}#{s.index}"
        sections[key] = (base + s.offset, s.size, s.flags)
        if s.flags & SHF_EXECINSTR:
            text_ranges.append((base + s.offset, base + s.offset + s.size))
    if common:
        start = min(common.values())
        end = max(common[i] + obj.symbols[i].size for i in common)
        sections["COMMON"] = (base + start, end - start, SHF_ALLOC | SHF_WRITE)

    symbols = []
    for idx, sym in enumerate(obj.symbols):
        if not sym.name or sym.kind not in _KALLSYMS_TYPES:
            continue
        if sym.shndx == "SHN_COMMON":
            symbols.append(ElfSymbol(sym.name, base + common[idx], sym.size, sym.kind,
                                     sym.bind, "COMMON", False))
        elif sym.shndx in placed:
            sec = placed[sym.shndx]
            symbols.append(ElfSymbol(sym.name, base + sec.offset + sym.value, sym.size,
                                     sym.kind, sym.bind, sec.name,
                                     bool(sec.flags & SHF_EXECINSTR)))
    return Module(name, path, base, size, sections, symbols, text_ranges)


def _store(mem, base, block, text_ranges):
    """Write `block` at `base`: the text span through text_poke (it drops translated
    blocks), the rest with a plain write."""
    text_end = max((end for _start, end in text_ranges), default=base) - base
    if text_end < len(block):
        mem.write(base + text_end, bytes(block[text_end:]))
    if text_end:
        mem.text_poke(base, bytes(block[:text_end]))
