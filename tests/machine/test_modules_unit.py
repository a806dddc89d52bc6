"""insmod/rmmod without a machine: emu.modules and emu.reloc_x86_64 against a real ModuleArea,
a real kallsyms (emu.symbols) holding a fake kernel, and a fake guest memory.

Modules are compiled here with gcc the way kernel modules are (-mcmodel=kernel, no PIC); the
relocations and symbols the loader produces are checked against values computed independently
from the object with pyelftools.
"""

import errno
import shutil
import struct
import subprocess
from dataclasses import dataclass

import pytest
from elftools.elf.constants import SH_FLAGS
from elftools.elf.elffile import ELFFile
from elftools.elf.enums import ENUM_RELOC_TYPE_x64
from elftools.elf.relocation import RelocationSection

from emu import reloc_x86_64
from emu.errors import ModuleLoadError
from emu.image import ElfSymbol
from emu.module_area import ModuleArea
from emu.modules import (MODULE_STATE_COMING, MODULE_STATE_GOING, PAGE_SIZE, ModuleLoader,
                         module_name)
from emu.symbols import Symbols

CFLAGS = ["-c", "-O2", "-mcmodel=kernel", "-mno-red-zone", "-fno-pic", "-fno-pie",
          "-ffreestanding", "-fno-asynchronous-unwind-tables", "-fcf-protection=none"]

# The fake kernel: text at the x86_64 kernel text base, the module area right after it (within
# +-2 GiB, as module_alloc() guarantees), and one variable in the direct map, far out of reach
# of a 32-bit displacement from the area.
KTEXT = 0xFFFFFFFF81000000
KDATA = 0xFFFFFFFF81400000
PRINTK = KTEXT + 0x1230
JIFFIES = KDATA + 0x40
FAR = 0xFFFF888000000000
FAR_VAR = FAR + 0x1000
AREA_START = 0xFFFFFFFF82000000
AREA_SIZE = 0x100000

KERNEL_ADDRS = {"printk": PRINTK, "jiffies": JIFFIES, "far_var": FAR_VAR}

DEMO_C = r"""
extern int printk(const char *fmt, ...);
extern unsigned long jiffies;
extern void maybe_hook(void) __attribute__((weak));
static int counter;
int shared_common;
const char *mod_greeting = "hello from mod";
int mod_table[4] = {1, 2, 3, 4};

int mod_tick(int x)
{
	counter += x;
	shared_common++;
	printk("tick %d\n", counter);
	if (maybe_hook)
		maybe_hook();
	return counter + (int)jiffies;
}

void *mod_counter_addr(void)
{
	return &counter;
}

int mod_switch(int k)
{
	switch (k) {
	case 0: return mod_table[1] * 3;
	case 1: return 17;
	case 2: return printk("a");
	case 3: return 99;
	case 4: return counter;
	case 5: return 5 + shared_common;
	case 6: return 1234;
	case 7: return printk("b");
	}
	return -1;
}
"""


class FakeKernel:
    """What Symbols.load_kernel reads from a KernelImage."""
    symbols = [
        ElfSymbol("printk", PRINTK, 0x80, "STT_FUNC", "STB_GLOBAL", ".text", True),
        ElfSymbol("do_fork", PRINTK + 0x80, 0x40, "STT_FUNC", "STB_GLOBAL", ".text", True),
        ElfSymbol("jiffies", JIFFIES, 8, "STT_OBJECT", "STB_GLOBAL", ".data", False),
        ElfSymbol("far_var", FAR_VAR, 4, "STT_OBJECT", "STB_GLOBAL", ".far", False),
    ]
    sections = {".text": (KTEXT, 0x200000, 6), ".data": (KDATA, 0x1000, 3),
                ".far": (FAR, 0x2000, 3)}


class FakeMem:
    """Guest memory over the module area only; records every write and text_poke."""

    def __init__(self, base, size):
        self.base = base
        self.ram = bytearray(size)
        self.writes = []
        self.pokes = []

    def _off(self, va, n):
        off = va - self.base
        assert 0 <= off and off + n <= len(self.ram), f"access {va:#x}+{n:#x} outside the area"
        return off

    def write(self, va, data):
        off = self._off(va, len(data))
        self.ram[off:off + len(data)] = data
        self.writes.append((va, len(data)))

    def text_poke(self, va, data):
        off = self._off(va, len(data))
        self.ram[off:off + len(data)] = data
        self.pokes.append((va, len(data)))

    def read(self, va, size):
        off = self._off(va, size)
        return bytes(self.ram[off:off + size])


@dataclass
class Env:
    mem: FakeMem
    symbols: Symbols
    area: ModuleArea
    loader: ModuleLoader

    def state(self):
        """Everything a failed load must leave as it was."""
        return (self.area.used_bytes, [(s.name, s.addr, s.module) for s in self.symbols],
                dict(self.loader.modules), list(self.mem.writes), list(self.mem.pokes))


def make_env(area_size=AREA_SIZE):
    symbols = Symbols()
    symbols.load_kernel(FakeKernel())
    area = ModuleArea(AREA_START, AREA_START + area_size)
    mem = FakeMem(AREA_START, AREA_SIZE)
    return Env(mem, symbols, area, ModuleLoader(mem, symbols, area))


@pytest.fixture
def env():
    return make_env()


def need_gcc():
    if shutil.which("gcc") is None:
        pytest.skip("gcc not installed")


def compile_source(directory, source, name, suffix=".c", extra=()):
    need_gcc()
    src = directory / f"{name}{suffix}"
    src.write_text(source)
    obj = directory / f"{name}.o"
    proc = subprocess.run(["gcc", *CFLAGS, *extra, str(src), "-o", str(obj)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return obj


@pytest.fixture(scope="module")
def demo_o(tmp_path_factory):
    return compile_source(tmp_path_factory.mktemp("demo"), DEMO_C, "demo", extra=["-fcommon"])


def relocations(path):
    """(target section name, r_offset, type, symbol, addend) of every relocation that applies
    to an allocated section, read with pyelftools."""
    with open(path, "rb") as f:
        elf = ELFFile(f)
        symtab = elf.get_section_by_name(".symtab")
        out = []
        for sec in elf.iter_sections():
            if not isinstance(sec, RelocationSection):
                continue
            target = elf.get_section(sec["sh_info"])
            if not target["sh_flags"] & SH_FLAGS.SHF_ALLOC:
                continue
            for r in sec.iter_relocations():
                sym = symtab.get_symbol(r["r_info_sym"])
                symsec = sym["st_shndx"]
                symsec = elf.get_section(symsec).name if isinstance(symsec, int) else symsec
                out.append((target.name, r["r_offset"], r["r_info_type"],
                            (sym.name, symsec, sym["st_value"]), r["r_addend"]))
        return out


def module_syms(symbols, name):
    return {s.name: s for s in symbols if s.module == name}


def signed32(raw):
    return struct.unpack("<i", raw)[0]


# -- the recipes -----------------------------------------------------------------------------

P = AREA_START + 0x100


@pytest.mark.parametrize("rtype, S, A, expected", [
    (0, 0x1234, 5, b""),                                                   # NONE
    (1, 0xFFFFFFFF82000000, 0x10, struct.pack("<Q", 0xFFFFFFFF82000010)),  # 64
    (1, 0, -1, struct.pack("<Q", 0xFFFFFFFFFFFFFFFF)),
    (2, P + 4 + 0x7FFFFFFF, -4, struct.pack("<i", 0x7FFFFFFF)),            # PC32 top
    (2, P - 0x80000000, 0, struct.pack("<i", -0x80000000)),                # PC32 bottom
    (4, PRINTK, -4, struct.pack("<i", PRINTK - 4 - P)),                    # PLT32 = PC32
    (10, 0xFFFFFFFF, 0, struct.pack("<I", 0xFFFFFFFF)),                    # 32 top
    (10, 0x1000, 4, struct.pack("<I", 0x1004)),
    (11, 0xFFFFFFFF80000000, 0, struct.pack("<i", -0x80000000)),           # 32S bottom
    (11, 0x7FFFFFFF, 0, struct.pack("<i", 0x7FFFFFFF)),                    # 32S top
    (11, KTEXT, 0x10, struct.pack("<i", KTEXT + 0x10 - (1 << 64))),
    (24, FAR_VAR, 0, struct.pack("<q", FAR_VAR - P)),                      # PC64
])
def test_recipe_values(rtype, S, A, expected):
    assert reloc_x86_64.apply(rtype, S, A, P) == expected


@pytest.mark.parametrize("rtype, S, A, val", [
    (2, P + 0x80000000, 0, 0x80000000),                 # PC32 one past the top
    (2, P - 0x80000001, 0, (-0x80000001) & (2**64 - 1)),
    (4, FAR_VAR, -4, (FAR_VAR - 4 - P) & (2**64 - 1)),
    (10, 0x100000000, 0, 0x100000000),                  # 32 zero-extends: 4 GiB does not fit
    (10, JIFFIES, 0, JIFFIES),                          # nor does any kernel address
    (10, 0, -1, 2**64 - 1),
    (11, 0xFFFFFFFF7FFFFFFF, 0, 0xFFFFFFFF7FFFFFFF),    # 32S one below the bottom
    (11, 0x80000000, 0, 0x80000000),                    # 32S one past the top
])
def test_recipe_overflow_fails_never_wraps(rtype, S, A, val):
    with pytest.raises(ModuleLoadError) as exc:
        reloc_x86_64.apply(rtype, S, A, P)
    assert exc.value.errno == errno.ENOEXEC
    name = reloc_x86_64.RECIPES[rtype].name
    assert str(exc.value) == f"overflow in relocation type {rtype} ({name}) val {val:#x}"


@pytest.mark.parametrize("rtype, text", [
    (42, "Unknown rela relocation: 42 (R_X86_64_REX_GOTPCRELX)"),
    (9, "Unknown rela relocation: 9 (R_X86_64_GOTPCREL)"),
    (9999, "Unknown rela relocation: 9999 (type 9999)"),
])
def test_recipe_unknown_type(rtype, text):
    with pytest.raises(ModuleLoadError) as exc:
        reloc_x86_64.apply(rtype, 0, 0, P)
    assert (exc.value.errno, str(exc.value)) == (errno.ENOEXEC, text)


def test_recipe_table_matches_pyelftools_numbering():
    assert {n: r.name for n, r in reloc_x86_64.RECIPES.items()} == {
        ENUM_RELOC_TYPE_x64[r.name]: r.name for r in reloc_x86_64.RECIPES.values()}
    assert sorted(reloc_x86_64.RECIPES) == [0, 1, 2, 4, 10, 11, 24]


# -- loading a real object -----------------------------------------------------------------

def test_layout_text_first_then_rodata_data_bss_common(env, demo_o):
    mod = env.loader.load(demo_o)
    assert mod.name == "demo" and env.loader.modules == {"demo": mod}
    assert mod.base % PAGE_SIZE == 0 and env.area.contains(mod.base)
    assert mod.contains(mod.base + mod.size - 1) and not mod.contains(mod.base + mod.size)
    assert env.area.used_bytes == mod.size
    secs = mod.sections
    assert secs[".text"][0] == mod.base
    assert set(secs) == {".text", ".rodata", ".rodata.str1.1", ".data", ".bss", "COMMON"}
    assert (secs[".text"][0] < min(secs[".rodata"][0], secs[".rodata.str1.1"][0])
            < max(secs[".rodata"][0], secs[".rodata.str1.1"][0]) < secs[".data"][0]
            < secs[".bss"][0] < secs["COMMON"][0])
    with open(demo_o, "rb") as f:
        for sec in ELFFile(f).iter_sections():
            if sec.name in secs:
                addr, size, flags = secs[sec.name]
                assert (size, flags) == (sec["sh_size"], sec["sh_flags"])
                assert addr % max(sec["sh_addralign"], 1) == 0
    assert mod.text_ranges == [(mod.base, mod.base + secs[".text"][1])]
    assert mod.base + mod.size == secs["COMMON"][0] + secs["COMMON"][1]


def test_text_goes_through_text_poke_and_data_through_write(env, demo_o):
    mod = env.loader.load(demo_o)
    text_len = mod.sections[".text"][1]
    assert env.mem.pokes == [(mod.base, text_len)]
    assert env.mem.writes == [(mod.base + text_len, mod.size - text_len)]


def test_call_to_kernel_function_and_read_of_kernel_variable(env, demo_o):
    mod = env.loader.load(demo_o)
    text = mod.sections[".text"][0]
    by_sym = {}
    for target, off, rtype, (sym, _sec, _v), addend in relocations(demo_o):
        if sym in ("printk", "jiffies") and target == ".text":
            by_sym.setdefault(sym, []).append((off, rtype, addend))
    assert {rtype for _o, rtype, _a in by_sym["printk"]} == {4}      # R_X86_64_PLT32
    assert {rtype for _o, rtype, _a in by_sym["jiffies"]} == {2}     # R_X86_64_PC32
    for name, S in (("printk", PRINTK), ("jiffies", JIFFIES)):
        for off, _rtype, addend in by_sym[name]:
            place = text + off
            assert env.mem.read(place, 4) == struct.pack("<i", S + addend - place)
    for off, _rtype, addend in by_sym["printk"]:
        place = text + off
        assert env.mem.read(place - 1, 1) in (b"\xe8", b"\xe9")         # call/jmp rel32
        assert place + 4 + signed32(env.mem.read(place, 4)) == PRINTK   # lands on printk


def test_data_pointer_to_a_string_literal(env, demo_o):
    mod = env.loader.load(demo_o)
    ptr_va = module_syms(env.symbols, "demo")["mod_greeting"].addr
    string_va = struct.unpack("<Q", env.mem.read(ptr_va, 8))[0]         # R_X86_64_64
    start, size, _flags = mod.sections[".rodata.str1.1"]
    assert start <= string_va < start + size
    assert env.mem.read(string_va, 15) == b"hello from mod\0"


def test_absolute_32s_address_and_switch_jump_table(env, demo_o):
    env.loader.load(demo_o)
    syms = module_syms(env.symbols, "demo")
    text = syms["mod_counter_addr"].addr
    code = env.mem.read(text, 8)
    assert code[:3] == b"\x48\xc7\xc0"                                  # movq $imm32, %rax
    assert signed32(code[3:7]) & (2**64 - 1) == syms["counter"].addr    # R_X86_64_32S
    table = [r for r in relocations(demo_o) if r[0] == ".rodata"]
    assert len(table) == 8 and {r[2] for r in table} == {1}
    rodata = env.loader.modules["demo"].sections[".rodata"][0]
    text_base = env.loader.modules["demo"].sections[".text"][0]
    for _t, off, _type, _sym, addend in table:
        entry = struct.unpack("<Q", env.mem.read(rodata + off, 8))[0]
        assert entry == text_base + addend
        assert syms["mod_switch"].addr <= entry < syms["mod_switch"].addr + syms[
            "mod_switch"].elf_size


def test_bss_and_common_are_zero_filled_and_addressed(env, demo_o):
    mod = env.loader.load(demo_o)
    syms = module_syms(env.symbols, "demo")
    bss_addr, bss_size, _ = mod.sections[".bss"]
    assert syms["counter"].addr == bss_addr and syms["counter"].kind == "d"
    assert env.mem.read(bss_addr, bss_size) == bytes(bss_size)
    common_addr, common_size, _ = mod.sections["COMMON"]
    shared = syms["shared_common"]
    assert (shared.addr, shared.elf_size, shared.kind) == (common_addr, 4, "D")
    assert shared.addr % 4 == 0 and common_size == 4
    assert env.mem.read(shared.addr, 4) == bytes(4)
    refs = [r for r in relocations(demo_o) if r[3][0] == "shared_common"]
    assert refs
    for target, off, _rtype, _sym, addend in refs:
        place = mod.sections[target][0] + off
        assert place + signed32(env.mem.read(place, 4)) - addend == shared.addr


def test_unresolved_weak_symbol_is_zero(env, demo_o):
    mod = env.loader.load(demo_o)
    refs = [r for r in relocations(demo_o) if r[3][0] == "maybe_hook"]
    assert sorted(r[2] for r in refs) == [4, 11]
    for target, off, rtype, _sym, addend in refs:
        place = mod.sections[target][0] + off
        S_seen = (signed32(env.mem.read(place, 4)) - addend + (place if rtype == 4 else 0))
        assert S_seen & (2**64 - 1) == 0


def expected_bytes(mod, kernel, rtype, symbol, addend, place, syms):
    """A relocation's bytes computed independently of emu.reloc_x86_64."""
    name, symsec, value = symbol
    if symsec == "SHN_UNDEF":
        S = kernel.get(name, 0)
    elif symsec == "SHN_COMMON":
        S = syms[name].addr
    else:
        S = mod.sections[symsec][0] + value
    width, val = {1: (8, S + addend), 2: (4, S + addend - place), 4: (4, S + addend - place),
                  10: (4, S + addend), 11: (4, S + addend)}[rtype]
    return (val % (1 << (8 * width))).to_bytes(width, "little")


def test_every_relocation_matches_pyelftools(env, demo_o):
    mod = env.loader.load(demo_o)
    syms = module_syms(env.symbols, "demo")
    relocs = relocations(demo_o)
    assert {r[2] for r in relocs} == {1, 2, 4, 11}
    for target, off, rtype, symbol, addend in relocs:
        place = mod.sections[target][0] + off
        want = expected_bytes(mod, KERNEL_ADDRS, rtype, symbol, addend, place, syms)
        assert env.mem.read(place, len(want)) == want, (target, off, symbol)


def test_every_symbol_matches_pyelftools(env, demo_o):
    mod = env.loader.load(demo_o)
    syms = module_syms(env.symbols, "demo")
    expected = {}
    with open(demo_o, "rb") as f:
        elf = ELFFile(f)
        for sym in elf.get_section_by_name(".symtab").iter_symbols():
            if not sym.name or sym["st_info"]["type"] not in ("STT_FUNC", "STT_OBJECT",
                                                               "STT_NOTYPE"):
                continue
            shndx = sym["st_shndx"]
            if isinstance(shndx, int):
                expected[sym.name] = mod.sections[elf.get_section(shndx).name][0] + sym[
                    "st_value"]
    assert set(expected) == {"counter", "mod_tick", "mod_counter_addr", "mod_switch",
                             "mod_table", "mod_greeting"}
    assert set(syms) == set(expected) | {"shared_common"}
    for name, addr in expected.items():
        assert syms[name].addr == addr, name
        assert env.symbols.lookup_name(name) == addr, name
    assert {s.name: s.value for s in mod.symbols} == {n: s.addr for n, s in syms.items()}


def test_module_symbols_in_kallsyms_format(env, demo_o):
    env.loader.load(demo_o)
    syms = module_syms(env.symbols, "demo")
    tick = syms["mod_tick"]
    assert tick.kind == "T" and tick.module == "demo"
    assert tick.size == syms["mod_counter_addr"].addr - tick.addr     # up to the next symbol
    assert env.symbols.format(tick.addr + 3) == f"mod_tick+0x3/{tick.size:#x} [demo]"
    assert env.symbols.lookup_addr(tick.addr + 3) == ("mod_tick", 3, tick.size)
    assert env.symbols.format(PRINTK + 1) == "printk+0x1/0x80"         # kernel unchanged


# -- refusals: each one errno, one message, nothing left behind -------------------------------

def load_fails(env, path, err, *fragments, name=None):
    before = env.state()
    with pytest.raises(ModuleLoadError) as exc:
        env.loader.load(path, name)
    assert exc.value.errno == err, str(exc.value)
    for fragment in (str(path),) + fragments:
        assert fragment in str(exc.value)
    assert env.state() == before
    return str(exc.value)


def test_unknown_symbol_is_enoent(env, tmp_path):
    obj = compile_source(tmp_path, "extern int no_such_function(void);\n"
                                   "int f(void) { return no_such_function() + 1; }\n", "needy")
    msg = load_fails(env, obj, errno.ENOENT, "Unknown symbol no_such_function")
    assert msg == f"{obj}: Unknown symbol no_such_function"


def test_pc32_overflow_is_enoexec(env, tmp_path):
    obj = compile_source(tmp_path, "extern int far_var;\nint f(void) { return far_var; }\n",
                         "faraway")
    load_fails(env, obj, errno.ENOEXEC, "overflow in relocation type 2 (R_X86_64_PC32)",
               "against far_var", "-mcmodel=kernel")


def test_r_x86_64_32_of_a_kernel_address_overflows(env, tmp_path):
    # movl $sym, %eax zero-extends: a kernel address can never fit (R_X86_64_32, type 10).
    obj = compile_source(tmp_path, ".text\n.globl f\nf:\n\tmovl $jiffies, %eax\n\tret\n",
                         "abs32", suffix=".s")
    assert [r[2] for r in relocations(obj)] == [10]
    load_fails(env, obj, errno.ENOEXEC,
               f"overflow in relocation type 10 (R_X86_64_32) val {JIFFIES:#x}",
               "against jiffies")


def patched(src, dst, edit):
    blob = bytearray(src.read_bytes())
    edit(blob)
    dst.write_bytes(bytes(blob))
    return dst


def rela_text(path):
    with open(path, "rb") as f:
        elf = ELFFile(f)
        rela = elf.get_section_by_name(".rela.text")
        first = next(rela.iter_relocations())
        return (rela["sh_offset"], elf.get_section_by_name(".text")["sh_offset"],
                first["r_offset"])


def test_unknown_relocation_type_is_enoexec(env, demo_o, tmp_path):
    rela_off, _text_off, _r_offset = rela_text(demo_o)

    def to_rex_gotpcrelx(blob):
        struct.pack_into("<I", blob, rela_off + 8, 42)     # low half of r_info: the type

    obj = patched(demo_o, tmp_path / "gotpcrel.o", to_rex_gotpcrelx)
    load_fails(env, obj, errno.ENOEXEC, "Unknown rela relocation: 42 (R_X86_64_REX_GOTPCRELX)")


def test_nonzero_relocation_target_is_enoexec(env, demo_o, tmp_path):
    _rela_off, text_off, r_offset = rela_text(demo_o)

    def dirty(blob):
        blob[text_off + r_offset] = 1

    obj = patched(demo_o, tmp_path / "dirty.o", dirty)
    load_fails(env, obj, errno.ENOEXEC, "Invalid relocation target at .text+")


def test_missing_file_is_enoent(env, tmp_path):
    load_fails(env, tmp_path / "nope.o", errno.ENOENT, "no such file")


def test_directory_is_einval(env, tmp_path):
    load_fails(env, tmp_path, errno.EINVAL, "not a regular file")


def test_not_elf_is_enoexec(env, tmp_path):
    path = tmp_path / "readme.o"
    path.write_text("this is not an object file\n")
    assert load_fails(env, path, errno.ENOEXEC) == f"{path}: not an ELF file"


def test_elf32_is_enoexec(env, demo_o, tmp_path):
    obj = tmp_path / "m32.o"
    need_gcc()
    src = tmp_path / "m32.c"
    src.write_text("int f(void) { return 1; }\n")
    built = subprocess.run(["gcc", "-m32", "-c", str(src), "-o", str(obj)], capture_output=True)
    if built.returncode != 0:
        # No 32-bit support in this gcc: flip EI_CLASS of a 64-bit object instead.
        patched(demo_o, obj, lambda blob: blob.__setitem__(4, 1))
    load_fails(env, obj, errno.ENOEXEC, "ELF32 object; modules must be ELF64 x86_64")


def test_executable_is_enoexec(env, demo_o, tmp_path):
    obj = patched(demo_o, tmp_path / "exec.o", lambda b: struct.pack_into("<H", b, 16, 2))
    load_fails(env, obj, errno.ENOEXEC, "ELF type ET_EXEC", "relocatable object (ET_REL")


def test_other_machine_is_enoexec(env, demo_o, tmp_path):
    obj = patched(demo_o, tmp_path / "arm.o", lambda b: struct.pack_into("<H", b, 18, 183))
    load_fails(env, obj, errno.ENOEXEC, "ELF for machine EM_AARCH64")


@pytest.mark.parametrize("keep", [40, 0x200, -0x100])
def test_truncated_is_enoexec(env, demo_o, tmp_path, keep):
    blob = demo_o.read_bytes()
    obj = tmp_path / "cut.o"
    obj.write_bytes(blob[:keep] if keep > 0 else blob[:len(blob) + keep])
    load_fails(env, obj, errno.ENOEXEC, "truncated")


def test_duplicate_name_is_eexist(env, demo_o):
    first = env.loader.load(demo_o)
    load_fails(env, demo_o, errno.EEXIST, "module demo is already loaded")
    second = env.loader.load(demo_o, name="demo2")
    assert set(env.loader.modules) == {"demo", "demo2"}
    assert second.base >= first.base + first.size
    assert {s.module for s in env.symbols if s.name == "mod_tick"} == {"demo", "demo2"}


def test_module_name_is_linux_modname():
    assert module_name("/x/y/probe-targets.o") == "probe_targets"
    assert module_name("hello.ko") == "hello"
    assert module_name("plain") == "plain"


def test_area_full_is_enomem(demo_o):
    env = make_env(area_size=0x100)
    msg = load_fails(env, demo_o, errno.ENOMEM, "module area full")
    assert "module demo" in msg


def test_failed_load_then_good_load_reuses_the_area(env, demo_o, tmp_path):
    obj = compile_source(tmp_path, "extern int far_var;\nint f(void) { return far_var; }\n",
                         "faraway")
    load_fails(env, obj, errno.ENOEXEC, "overflow")
    assert env.loader.load(demo_o).base == AREA_START


def test_debug_info_is_skipped_and_eh_frame_is_loaded(env, tmp_path):
    obj = compile_source(tmp_path, "extern int printk(const char *, ...);\n"
                                   "int f(int x) { return printk(\"%d\", x); }\n", "dbg",
                         extra=["-g", "-fasynchronous-unwind-tables"])
    with open(obj, "rb") as f:
        names = {s.name for s in ELFFile(f).iter_sections()}
    assert {".rela.debug_info", ".rela.eh_frame"} <= names
    mod = env.loader.load(obj)
    assert ".eh_frame" in mod.sections
    assert not any(name.startswith(".debug") for name in mod.sections)
    for target, off, rtype, symbol, addend in relocations(obj):
        place = mod.sections[target][0] + off
        want = expected_bytes(mod, KERNEL_ADDRS, rtype, symbol, addend, place, {})
        assert env.mem.read(place, len(want)) == want


# -- unload ---------------------------------------------------------------------------------

def test_unload_removes_symbols_and_frees_poisoned_memory(env, demo_o):
    before = env.area.used_bytes
    mod = env.loader.load(demo_o)
    tick = env.symbols.lookup_name("mod_tick")
    assert tick is not None
    env.mem.pokes.clear()
    env.loader.unload(mod)
    assert env.area.used_bytes == before
    assert env.loader.modules == {}
    assert env.symbols.lookup_name("mod_tick") is None
    assert module_syms(env.symbols, "demo") == {}
    assert env.symbols.format(tick) == f"{tick:#x}"
    assert env.mem.read(mod.base, mod.size) == b"\xcc" * mod.size
    assert env.mem.pokes == [(mod.base, mod.sections[".text"][1])]   # translated code dropped
    again = env.loader.load(demo_o)
    assert again.base == mod.base


def test_unload_of_a_module_not_loaded_is_enoent(env, demo_o):
    mod = env.loader.load(demo_o)
    env.loader.unload("demo")
    for gone in (mod, "demo"):
        with pytest.raises(ModuleLoadError) as exc:
            env.loader.unload(gone)
        assert (exc.value.errno, str(exc.value)) == (errno.ENOENT, "module demo is not loaded")


def test_notifiers_see_coming_and_going_with_symbols_present(env, demo_o):
    seen = []
    env.loader.notifiers.append(
        lambda state, mod: seen.append((state, mod.name, env.symbols.lookup_name("mod_tick"))))
    mod = env.loader.load(demo_o)
    tick = env.symbols.lookup_name("mod_tick")
    env.loader.unload(mod)
    assert seen == [(MODULE_STATE_COMING, "demo", tick), (MODULE_STATE_GOING, "demo", tick)]


def test_a_refusing_notifier_undoes_the_load(env, demo_o):
    before = env.area.used_bytes

    def refuse(state, mod):
        raise ModuleLoadError(f"{mod.name}: refused", errno.EBUSY)

    env.loader.notifiers.append(refuse)
    with pytest.raises(ModuleLoadError) as exc:
        env.loader.load(demo_o)
    assert exc.value.errno == errno.EBUSY
    assert env.area.used_bytes == before and env.loader.modules == {}
    assert module_syms(env.symbols, "demo") == {}
