"""kallsyms against pyelftools, for every symbol of the image."""

from elftools.elf.elffile import ELFFile

from emu import Machine


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
