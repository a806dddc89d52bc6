"""The whole-image differential: a no-op kprobe at every instruction boundary of every
function that may be probed (the rest refused with Linux's errno), the whole workload run:
console, exit code, clock and final task states identical to the unprobed run, and exactly
two traps (int3 + debug) per hit."""

import errno
from collections import Counter

import pytest
from capstone import CS_ARCH_X86, CS_MODE_64, Cs

from emu import Machine
from kprobes import Kprobe, KprobeError, Kprobes


def every_instruction(m):
    cs = Cs(CS_ARCH_X86, CS_MODE_64)
    for sym in m.symbols.functions():
        if sym.module is not None or sym.size == 0:
            continue
        code = m.read(sym.addr, sym.size)
        for insn in cs.disasm(code, sym.addr):
            yield sym, insn


def counting_handlers():
    """(hits, pre, post): no-op handlers that count, hits[probe address] for each
    pre_handler call and hits["post"] for all the post_handler calls."""
    hits = Counter()

    def pre(p, regs):
        hits[p.addr] += 1
        return 0

    def post(p, regs, flags):
        hits["post"] += 1

    return hits, pre, post


@pytest.mark.slow
def test_probe_every_instruction_of_the_image(reference_run):
    m = Machine()
    k = Kprobes(m)
    hits, pre, post = counting_handlers()
    registered, refused = [], Counter()
    for sym, insn in list(every_instruction(m)):      # decode before anything is armed
        if insn.address in k.table:
            continue                      # an alias symbol at the same address
        p = Kprobe(addr=insn.address, pre_handler=pre, post_handler=post)
        try:
            k.register_kprobe(p)
            registered.append(p)
        except KprobeError as exc:
            refused[(exc.errno, str(exc).split(": ", 1)[1].split(" (")[0][:40])] += 1
    # Everything refused is refused with EINVAL for a stated reason (blacklist, or an
    # instruction that cannot run out of line); nothing is off a boundary.
    assert {code for code, _why in refused} == {errno.EINVAL}
    assert len(registered) > 1500
    result = m.run()
    assert result.reason == "halt" and result.exit_code == 0
    assert m.console == reference_run["console"]
    assert m.clock.now == reference_run["clock"]            # no footprint on guest time
    assert [(t.pid, t.comm, t.state, t.exit_code) for t in m.tasks()] == \
        reference_run["tasks"]
    total = sum(v for key, v in hits.items() if key != "post")
    assert total == hits["post"] == k.traps["int3"] == k.traps["debug"]
    assert total > 300_000
    assert k.traps["fault"] == k.traps["int3-foreign"] == k.traps["int3-vanished"] == 0
    assert sum(p.nmissed for p in registered) == 0
