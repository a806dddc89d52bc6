"""kallsyms against pyelftools, for every symbol of the image."""

from operator import attrgetter
from types import SimpleNamespace

from elftools.elf.elffile import ELFFile

from emu import Machine
from emu import symbols as S


def elf_symbols(path):
    with open(path, "rb") as f:
        elf = ELFFile(f)
        return [(s.name, s["st_value"], s["st_info"]["type"], s["st_info"]["bind"],
                 s["st_shndx"]) for s in elf.get_section_by_name(".symtab").iter_symbols()
                if s.name and s["st_info"]["type"] not in ("STT_FILE", "STT_SECTION")]


def test_kallsyms_agrees_with_pyelftools_for_every_symbol(image_path):
    m = Machine()
    syms = elf_symbols(image_path)
    addressed = [s for s in syms if s[4] != "SHN_ABS"]
    assert len(addressed) > 150
    for name, value, _kind, bind, _ndx in addressed:
        hit = m.symbols.symbol_at(value)
        assert hit is not None and hit.addr == value, name
        if bind == "STB_GLOBAL":
            assert m.symbols.lookup_name(name) == value, name
    # Absolute symbols are the layout exports, not addresses.
    consts = {s[0]: s[1] for s in syms if s[4] == "SHN_ABS"}
    assert consts["THREAD_SIZE"] == m.image.const("THREAD_SIZE") == 8192
    assert m.symbols.lookup_name("THREAD_SIZE") is None


def test_lookup_addr_formats_like_kallsyms(image_path):
    m = Machine()
    fib = m.symbols.get("fib")
    nxt = min(s.addr for s in m.symbols if s.addr > fib.addr)
    assert fib.size == nxt - fib.addr            # kallsyms: up to the next symbol
    assert m.symbols.lookup_addr(fib.addr + 4) == ("fib", 4, fib.size)
    assert m.symbols.format(fib.addr + 4) == f"fib+0x4/{fib.size:#x}"
    assert m.symbols.lookup_addr(0x1234) is None and m.symbols.format(0x1234) == "0x1234"
    assert m.symbols.get("kretprobe_trampoline").elf_size == 1


def test_mod_colon_sym_looks_only_in_that_module(tmp_path):
    from tests.conftest import compile_module

    src = tmp_path / "shadow.c"
    src.write_text("long fib(long n) { return n + 1000; }\n"
                   "static long helper(long n) { return n; }\n"
                   "long (*use)(long) = helper;\n")
    m = Machine()
    kernel_fib = m.symbols.lookup_name("fib")
    mod = m.load_module(compile_module(src, tmp_path))
    mod_fib = next(s.value for s in mod.symbols if s.name == "fib")
    assert m.symbols.lookup_name("fib") == kernel_fib         # the kernel's comes first
    assert m.symbols.lookup_name("shadow:fib") == mod_fib != kernel_fib
    assert m.symbols.lookup_name("shadow:helper") is not None  # locals too, as kallsyms
    assert m.symbols.lookup_name("shadow:printk") is None      # never outside the module
    assert m.symbols.lookup_name("nomod:fib") is None
    syms = m.symbols.module_symbols("shadow")
    assert sorted(s.name for s in syms) == ["fib", "helper", "use"]
    assert [s.addr for s in syms] == sorted(s.addr for s in syms)
    assert m.symbols.module_symbols("nomod") == []


def test_a_small_module_is_inserted_where_sorting_would_put_it():
    """add_module() inserts a few symbols into the kernel's order instead of sorting it all
    again: the order sorting gives (ties after the equal symbols already there), found by
    address, and undone by a restore to a snapshot from before; a large module is sorted
    in whole."""
    m = Machine()
    m.boot()
    snap = m.snapshot()
    fib = m.symbols.get("fib")
    before = list(m.symbols)

    def sym(name, value, size=1):
        return SimpleNamespace(name=name, value=value, size=size, executable=True,
                               bind="STB_GLOBAL")

    few = [sym("fib", fib.addr), sym("aaa", fib.addr), sym("zzz", fib.addr + 1),
           sym("last", 1 << 63)]
    m.symbols.add_module("few", few, [(fib.addr, fib.addr + 8), (1 << 63, (1 << 63) + 8)])
    order = attrgetter("addr", "name")
    assert list(m.symbols) == sorted(before + m.symbols.module_symbols("few"), key=order)
    at_fib = [(s.name, s.module) for s in m.symbols if s.addr == fib.addr]
    assert at_fib == [("aaa", "few"), ("fib", None), ("fib", "few")]
    assert m.symbols.symbol_at(fib.addr + 1).name == "zzz"
    assert m.symbols.format((1 << 63) + 2) == "last+0x2/0x8 [few]"
    m.restore(snap)
    assert list(m.symbols) == before
    many = [sym(f"m{i}", (1 << 62) + i) for i in range(S._INSERT_MAX + 1)]
    m.symbols.add_module("many", many, [(1 << 62, (1 << 62) + 100)])
    assert [s.name for s in m.symbols if s.module == "many"] == [s.name for s in many]
    assert list(m.symbols) == sorted(before + m.symbols.module_symbols("many"), key=order)
