"""observer: what the probes cost the guest -- nothing.  The clock is the instruction
count, and what kprobes runs on the guest's behalf (each int3, guest code a handler runs
through m.call) is taken back out of it, so a probed run is scheduled exactly like the
unprobed one.  Then a run stopped at the 17th hit of a probe, and the same stop replayed
from a snapshot of the booted machine: the same state, byte for byte."""

import json

from emu import Machine
from kprobes import Kprobe, Kprobes, Kretprobe
from kprobes.demos import scenes
from kprobes.demos.lesson import Claim, Demo, Recorder

HIT = 17                  # the hit the second scene stops at
HOT = "mix_switch"        # called 240 times by the mixer task
CALLED = ("fib", 7)       # what the schedule() probe's handler runs in the guest


def quiet(rec):
    """A recorder that tells none of the mechanism's events: only the lesson's own steps."""
    rec.quiet(*rec.narrators)
    rec.fold = True
    return rec


def ticks_of(m):
    """Every timer interrupt the run takes: (clock, ip) -- its preemption points."""
    out = []
    m.observers.append(lambda e: e.kind == "irq" and out.append((e.clock, e.ip)))
    return out


def scene_no_effect(facts):
    plain = Machine()
    plain.boot()
    plain_ticks = ticks_of(plain)
    unprobed = scenes.final_state(plain)
    m = Machine()
    m.boot()
    k = Kprobes(m)
    ticks = ticks_of(m)
    rec = quiet(Recorder(m, k))
    hidden_by_calls = []

    def on_schedule(p, regs):
        before = m.clock.hidden
        m.call(*CALLED)
        hidden_by_calls.append(m.clock.hidden - before)
        return 0

    probes = [Kprobe(symbol_name="schedule", pre_handler=on_schedule),
              Kprobe(symbol_name=HOT, pre_handler=lambda p, regs: 0,
                     post_handler=lambda p, regs, flags: None)]
    rp = Kretprobe(symbol_name="sys_mkdir", handler=lambda ri, regs: None)
    with rec:
        rec.step("before", f"The workload has just run without kprobes: {len(plain_ticks)} "
                 f"timer ticks, power-off at clock {unprobed['clock']:,}. Now the same boot "
                 f"with a kprobe on schedule (whose pre_handler runs {CALLED[0]}"
                 f"({CALLED[1]}) in the guest through m.call), one on {HOT} and a kretprobe "
                 "on sys_mkdir, with this lesson's recorder attached.", phase="before",
                 facts={"ticks": len(plain_ticks), "clock": unprobed["clock"]})
        k.register_kprobes(probes)
        k.register_kretprobe(rp)
        probed = scenes.final_state(m)
        traps = k.traps
        hidden = m.clock.hidden
        rec.step("probed run", f"Power-off at clock {probed['clock']:,} after "
                 f"{traps['int3']:,} int3 and {traps['debug']:,} debug traps and "
                 f"{len(hidden_by_calls)} guest calls from the handler. kprobes ran "
                 f"{hidden:,} instructions for itself -- {traps['int3']:,} int3s and "
                 f"{sum(hidden_by_calls):,} in m.call -- and took every one back out of the "
                 "clock.", phase="probed",
                 facts={"clock": probed["clock"], "int3": traps["int3"],
                        "debug": traps["debug"], "hidden": hidden,
                        "by_calls": sum(hidden_by_calls), "calls": len(hidden_by_calls)})
        same = [a == b for a, b in zip(plain_ticks, ticks)]
        lines = [f"{'tick':>4}  {'unprobed (clock, ip)':<38} probed"]
        for n, ((c0, ip0), (c1, ip1)) in enumerate(list(zip(plain_ticks, ticks))[:6], 1):
            lines.append(f"{n:>4}  {c0:>9,} {rec.short(ip0):<28} {c1:>9,} {rec.short(ip1)}")
        diff = [n for n, ok in enumerate(same, 1) if not ok]
        lines.append(f"... {len(ticks)} ticks in all; diff: "
                     + ("empty" if not diff and len(ticks) == len(plain_ticks) else
                        f"ticks {diff}"))
        ok, detail = scenes.same_final(unprobed, probed)
        rec.step("diff", f"Every timer tick lands at the same clock and the same instruction "
                 f"in both runs, so every preemption is the same: the diff of the "
                 f"{len(ticks)} ticks is {'empty' if not diff else 'not empty'}. Final "
                 f"state: {detail}.", phase="diff",
                 facts={"ticks": len(ticks), "diff": diff, "same_final": ok},
                 extra={"title": "timer ticks (preemption points)", "lines": lines})
    facts.update({"plain_ticks": plain_ticks, "ticks": ticks, "hidden": hidden,
                  "by_calls": sum(hidden_by_calls), "traps": traps,
                  "same_final": scenes.same_final(unprobed, probed)})
    return rec.finish()


def stop_at_hit(m, n):
    """Kprobes on a booted machine, a kprobe on HOT, run to the end of its n-th hit; the
    recorded step there."""
    k = Kprobes(m)
    rec = quiet(Recorder(m, k))
    rec.watch(HOT)
    hits = []
    p = Kprobe(symbol_name=HOT, pre_handler=lambda p, regs: hits.append(regs.ip) and 0)
    rec.probe = p

    with rec:
        k.register_kprobe(p)
        scenes.run_until_event(m, lambda ev: ev.kind == "kprobes.fixup" and len(hits) == n)
        rec.step(f"hit {n}", f"The run stopped right after the {n}th hit of the probe on "
                 f"{HOT}, at clock {m.clock.now:,} in {rec.task_name()}: ip "
                 f"{rec.short(m.engine.reg('ip'))}, the instruction after the probed one.",
                 phase="hit", facts={"hits": len(hits), "clock": m.clock.now,
                                     "ip": m.engine.reg("ip")})
    return rec.finish(), k, p


def scene_replay(facts):
    m = Machine()
    m.boot()
    snap = m.snapshot()
    first, k, p = stop_at_hit(m, HIT)
    k.unregister_kprobe(p)
    state = (m.regs_dict(), m.clock.now, m.console)
    m.restore(snap)
    again, k, p = stop_at_hit(m, HIT)
    replay = (m.regs_dict(), m.clock.now, m.console)
    first[-1]["title"] = again[-1]["title"] = f"hit {HIT}"
    again[-1]["narration"] = (f"m.restore() back to the booted machine, a new Kprobes, the "
                              f"same probe, the same stop: the step at hit {HIT} is recorded "
                              "again. " + again[-1]["narration"])
    a = json.dumps({key: v for key, v in first[-1].items() if key != "narration"},
                   sort_keys=True)
    b = json.dumps({key: v for key, v in again[-1].items() if key != "narration"},
                   sort_keys=True)
    facts.update({"replay_same_step": a == b, "replay_same_state": state == replay,
                  "replay_bytes": len(a), "hit_clock": first[-1]["clock"]})
    again[-1]["phase"] = "replay"
    return first + again


def record():
    facts = {}
    steps = scene_no_effect(facts)
    steps += scene_replay(facts)
    return steps, facts


def _ticks(lesson):
    f = lesson.facts
    return f["ticks"] == f["plain_ticks"] and len(f["ticks"]) > 0, \
        f"{len(f['ticks'])} timer ticks at the same (clock, ip) in both runs"


def _ledger(lesson):
    f = lesson.facts
    ok = f["hidden"] == f["traps"]["int3"] + f["by_calls"] and f["by_calls"] > 0
    return ok, (f"hidden {f['hidden']:,} == {f['traps']['int3']:,} int3s + "
                f"{f['by_calls']:,} m.call instructions; the clock never saw them")


def _replay(lesson):
    f = lesson.facts
    hit, replay = lesson.first(phase="hit"), lesson.first(phase="replay")
    ok = f["replay_same_step"] and f["replay_same_state"] and \
        hit["facts"]["hits"] == replay["facts"]["hits"] == HIT
    return ok, (f"the step at hit {HIT} (clock {f['hit_clock']:,}): {f['replay_bytes']:,} "
                "bytes of JSON, identical; registers, clock and console identical")


DEMO = Demo(
    name="observer",
    question="What do the probes cost the guest?",
    tier="S",
    confusions=(),
    record=record,
    claims=[
        Claim("the probed run takes every timer tick at the unprobed run's (clock, ip)",
              _ticks),
        scenes.same_final_claim("final state == the unprobed run's (console, clock, "
                                "registers)"),
        Claim("the host's work is kept apart from the guest clock", _ledger),
        Claim(f"stopped at hit {HIT} and replayed from a snapshot: byte-identical", _replay),
    ],
    prose=("kpemu's clock is the guest's instruction count, and every instruction kprobes "
           "runs for itself is taken back out of it. A probed run is therefore the "
           "unprobed run, tick for tick -- something no tracer on real hardware can "
           "offer."),
    after=("Because the probes leave no footprint, any lesson can be recorded again and "
           "give the same bytes, and a probed run can be compared with the unprobed one "
           "exactly."),
)
