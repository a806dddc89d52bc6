"""The whole-image differential, adapted to Linux: a no-op kprobe (pre and post handler) on
every instruction boundary of a set of hot Linux functions -- the scheduler, fork, exit,
open and write -- and the workload's run identical to the unprobed one: console, exit
code, instruction count and clock.  Every boundary can be probed but the static call sites
Linux patches (refused as Linux refuses them); each hit is exactly one int3 and one #DB."""

import errno
from collections import Counter

import pytest
from capstone import CS_ARCH_X86, CS_MODE_64, Cs

from kprobes import Kprobe, KprobeError, Kprobes
from tests.kprobes.test_differential import counting_handlers

pytestmark = pytest.mark.slow

HOT = {
    "scheduler": ("__schedule", "schedule"),
    "fork": ("kernel_clone", "copy_process", "wake_up_new_task"),
    "exit": ("do_exit", "release_task"),
    "open": ("do_sys_openat2",),
    "write": ("ksys_write", "vfs_write"),
}


def boundaries(m, name):
    sym = m.symbols.get(name)
    return [insn.address for insn in Cs(CS_ARCH_X86, CS_MODE_64).disasm(
        m.read(sym.addr, sym.size), sym.addr)]


@pytest.mark.parametrize("fastpath", [True, False], ids=["c-path", "python-path"])
def test_every_boundary_of_hot_linux_functions(lm, linux_reference, fastpath, capsys):
    k = Kprobes(lm)
    k.arch.fastpath = fastpath
    hits, pre, post = counting_handlers()
    probes, refused = {}, {}
    for group, names in HOT.items():
        for name in names:
            for addr in boundaries(lm, name):
                try:
                    k.register_kprobe(Kprobe(addr=addr, pre_handler=pre, post_handler=post))
                    probes[addr] = group
                except KprobeError as exc:
                    refused[addr] = (exc.errno, str(exc).split(": ", 1)[1])
    # Refused only where Linux refuses too: the static call sites it patches at run time.
    patched = {site for site, _end, _what in lm.guest_patched_text()}
    assert set(refused.values()) == {
        (errno.EINVAL, "blacklisted (in a static call site, which the kernel patches) (EINVAL)")}
    assert set(refused) <= patched and refused
    result = lm.run()
    assert (result.reason, result.exit_code) == ("halt", 0)
    assert lm.console == linux_reference["console"]
    assert result.insns == linux_reference["insns"]
    assert lm.clock.now == linux_reference["clock"]         # no footprint on guest time
    total = sum(v for key, v in hits.items() if key != "post")
    assert total == hits["post"] == k.traps["int3"] == k.traps["debug"]
    assert k.traps["fault"] == k.traps["int3-foreign"] == k.traps["int3-vanished"] == 0
    by_group = Counter()
    for addr, n in hits.items():
        if addr != "post":
            by_group[probes[addr]] += n
    assert set(by_group) == set(HOT)                 # every kind of function was hit
    assert sum(p.nmissed for p in k.probes()) == 0
    with capsys.disabled():
        print(f"\n  linux differential ({'C' if fastpath else 'Python'} path): "
              f"{len(probes)} probes ({len(refused)} refused), {total} hits, {len([a for a in hits if a != 'post'])} "
              f"probes hit; {dict(by_group)}")
