"""Regression: a probe left on an unloaded module, unregistered later, wrote its saved byte
back -- into the module loaded at that address since, which then died on a corrupted
instruction.  Now nothing is written: checked over the whole of guest RAM, at every step,
against what that step itself must write."""

from kprobes import Kprobe, Kretprobe

MASK = (1 << 64) - 1


def reuse_mix(n):
    """reuse_targets.c's reuse_mix(), in Python (long arithmetic wraps as gcc compiles it)."""
    a, b = 1, 7
    for i in range(n):
        a = (a * 31 + (b ^ i)) & MASK
        b = ((b << 3) - a + 0x1234567) & MASK
        if a & 0x100:
            b ^= 0x5A5A5A5A
    return a ^ b


def changed(before, after, page=4096):
    """The physical [start, end) ranges where two RAM images differ."""
    out = []
    for base in range(0, len(before), page):
        if before[base:base + page] == after[base:base + page]:
            continue
        for i in range(base, base + page):
            if before[i] != after[i]:
                if out and out[-1][1] == i:
                    out[-1][1] = i + 1
                else:
                    out.append([i, i + 1])
    return [tuple(r) for r in out]


def within(ranges, m, mod):
    lo = m.mem.pa(mod.base)
    return all(lo <= a and b <= lo + mod.size for a, b in ranges)


def test_unregistering_after_unload_leaves_the_next_module_intact(km, probe_targets_o,
                                                                  reuse_targets_o):
    m, k = km
    a = m.load_module(probe_targets_o)
    hits = []
    kps = [Kprobe(symbol_name="mod_strlen", pre_handler=lambda p, r: hits.append(1) or 0),
           Kprobe(symbol_name="mod_strlen"),                     # an aggregate
           Kprobe(symbol_name="mod_fib_plus", post_handler=lambda p, r, f: None)]
    rp = Kretprobe(symbol_name="mod_bump", handler=lambda ri, regs: hits.append(2))
    k.register_kprobes(kps)
    k.register_kretprobe(rp)
    assert m.call("mod_strlen", "abc") == 3 and m.call("mod_bump") == 1 and hits == [1, 2]
    saved = {p.addr: p.opcode for p in kps + [rp.kp]}

    ram0 = bytes(m.mem.ram)
    m.unload_module(a)
    ram1 = bytes(m.mem.ram)
    assert within(changed(ram0, ram1), m, a)             # only the module, poisoned
    assert m.read(a.base, a.size) == b"\xcc" * a.size

    b = m.load_module(reuse_targets_o)
    ram2 = bytes(m.mem.ram)
    assert b.base == a.base and within(changed(ram1, ram2), m, b)
    # The test has teeth: each saved byte would change B's text where it would land.
    assert all(b.contains(addr) and m.read(addr, 1)[0] != byte
               for addr, byte in saved.items())

    k.unregister_kprobes(kps)
    k.unregister_kretprobe(rp)
    assert changed(ram2, bytes(m.mem.ram)) == []          # not one byte, anywhere
    assert k.list().count("\n") == 1 and k.probes() == []
    assert m.call("reuse_mix", 10) == reuse_mix(10)
    assert m.run().reason == "halt"
