"""designs: June 2005 vs the redesign, side by side -- the same probed return of sys_mkdir
recorded under kretprobe design (a) (instances keyed by the return slot's address, the
task found by masking it) and design (b) (keyed by current), rows aligned by phase; a table
of the differences; then three short scenes where (a) breaks and (b) does not, or the
other way round: a handler on an interrupt stack, a tail call, and exec."""

import os

import kernel_images
from emu import GuestFault
from kprobes import Kretprobe
from kprobes.demos import scenes
from kprobes.demos.lesson import Claim, Demo, Recorder
from kprobes.demos.lessons import returns
from kprobes.kretprobe import hash_ptr

DESIGNS = ("stack", "task")            # (a), then (b)
LETTER = {"stack": "(a)", "task": "(b)"}
TARGETS = os.path.join(os.path.dirname(kernel_images.__file__), "lessons",
                       "designs_targets.o")
IRQ_ARG = 42
TAIL_ARG = 5
OOPS_LINES = 9            # of the oops report, in its panel

DIFFERENCES = [
    ("", "design (a), June 2005", "design (b), 2.6.13"),
    ("instances keyed by", "the return slot's address;", "the task: current,"),
    ("", "task = mask(slot) -> thread_info", "valid on any stack"),
    ("return address set", "in the post handler,", "in the pre handler,"),
    ("", "after the nop's step", "which returns 1"),
    ("trampoline's nop", "single-stepped out of line", "never run"),
    ("traps per return", "4 (int3 #DB, int3 #DB)", "3 (int3 #DB, int3)"),
    ("kprobe_flush_task", "writes ret_addr back, recycles", "recycles; stack untouched"),
    ("several on a frame", "a static orig_ret_addr", "ret_addr = trampoline, walk on"),
]


def _differences_step(rec, traps):
    lines = [f"{a:<19} {b:<35} {c}" for a, b, c in DIFFERENCES]
    lines.append(f"{'this run':<19} {str(traps['stack']) + ' traps':<35} "
                 f"{traps['task']} traps")
    rec.step("the differences", f"Both runs returned the same value to the same caller, "
             f"with the same final state; design (a) took {traps['stack']} traps for the "
             f"probed call, entry and return, and design (b) {traps['task']}. What else "
             "differs:", phase="table",
             facts={"traps": traps}, extra={"title": "DIFFERENCES (a) vs (b)",
                                            "lines": lines})


# -- the sub-scenes: a compact telling (instances, handlers, the result) -------------------

KEEP = ("kprobes.swap", "kprobes.instance", "kprobes.handler", "kprobes.flush")


def _compact(m, design, scene, tramp):
    """The return narrators, only the bookkeeping events, with the scene's phases."""
    full = returns.return_narrators(m, design)

    def wrap(kind):
        def tell(rec, ev):
            if kind == "kprobes.handler" and ev.which == "pre_handler" and \
                    ev.probe.addr != tramp:
                return None                       # the entry probe: told by its swap
            told = full[kind](rec, ev)
            if told is None:
                return None
            title, text, phase, facts = told
            return title, text, f"{scene}.{'entry' if phase.startswith('E.') else 'return'}", \
                facts
        return tell

    narrators = {kind: wrap(kind) for kind in KEEP if kind in full}
    return narrators


def _swap_in_tail(design, tramp):
    """A swap whose slot already holds the trampoline: the tail-called function's entry."""
    def tell(rec, ev):
        ri = ev.instance
        rec.stack_notes[ev.slot] = (ev.old, ev.new)
        if ev.old != tramp:
            return ("arch_prepare_kretprobe", f"{rec.short(ev.old)} in the slot at "
                    f"{ev.slot:#x} becomes kretprobe_trampoline.", "tail.entry",
                    {"slot": ev.slot, "old": ev.old, "ret_addr": ri.ret_addr})
        if design == "stack":
            text = (f"The slot at {ev.slot:#x} already holds kretprobe_trampoline "
                    f"(designs_f's hijack: F jumped to G with its frame gone). Design (a) "
                    f"then takes the static orig_ret_addr, the last real address it saw: "
                    f"{rec.short(ri.ret_addr)}, stale -- that call returned long ago.")
        else:
            text = (f"The slot at {ev.slot:#x} already holds kretprobe_trampoline "
                    f"(designs_f's hijack: F jumped to G with its frame gone). Design (b) "
                    f"records exactly that, ret_addr = {rec.short(ri.ret_addr)}, and will "
                    "walk on to F's instance.")
        return ("the tail call's entry", text, "tail.entry",
                {"slot": ev.slot, "old": ev.old, "ret_addr": ri.ret_addr})
    return tell


def _flush_teller(m, design):
    def tell(rec, ev):
        if ev.caller != "flush_thread":
            return None
        what = ("wrote each instance's ret_addr back into its stack slot and recycled it"
                if design == "stack" else "recycled the task's instances and left the "
                "stack alone: sys_execve's slot still holds kretprobe_trampoline")
        return ("kprobe_flush_task from exec", f"exec's flush_thread() called "
                f"kprobe_flush_task({returns.task_label(m, ev.task)}), "
                f"which {what}.", "exec.flush", {"task": ev.task})
    return tell


def _oops_panel(oops):
    lines = oops.format().splitlines()
    return {"title": "OOPS", "lines": lines[:OOPS_LINES]}


def _scene(design, name, watch, flush_on_exec=False, module=True):
    """A fresh machine for a scene, and its recorder with the compact narrators:
    (m, k, tramp, rec)."""
    m, k = scenes.booted(design=design, flush_on_exec=flush_on_exec)
    if module:
        m.load_module(TARGETS)
    tramp = m.symbols.lookup_name(returns.TRAMPOLINE)
    rec = Recorder(m, k, design=design)
    rec.narrators = _compact(m, design, name, tramp)
    rec.watch(watch)
    return m, k, tramp, rec


def _irq_scene(design):
    m, k, tramp, rec = _scene(design, "irq", "designs_irq_handler")
    low = m.symbols.lookup_name("designs_irq_stack")
    high = m.symbols.lookup_name("designs_irq_stack_end")
    seen = []
    rp = Kretprobe(symbol_name="designs_irq_handler", maxactive=returns.MAXACTIVE,
                   handler=lambda ri, regs: seen.append((ri.task, regs.ax)))
    facts = {"low": low, "high": high}
    with rec:
        k.register_kretprobe(rp)
        slot = high - 64 - 16                     # the pushed old rsp, then the call
        mask = slot & ~(m.layout.thread_size - 1)
        facts.update(slot=slot, masked=mask)
        rec.step("an interrupt stack", f"designs_irq switches to an interrupt stack of "
                 f"its own, [{low:#x}, {high:#x}), as x86_64's interrupt entry does, and "
                 f"calls designs_irq_handler({IRQ_ARG}) there, which fills a 4 KiB buffer "
                 f"on its stack. Its return slot {slot:#x} masks to {mask:#x}: the middle "
                 "of the IRQ stack, no thread_info.", phase="irq.setup", facts=facts)
        try:
            value = m.call("designs_irq", IRQ_ARG)
        except GuestFault as exc:
            facts.update(oops=exc.oops.message, value=None)
            taken = next(st["facts"] for st in rec.steps if st["title"] == "instance taken")
            found = next(st["facts"] for st in rec.steps
                         if st["title"] == "trampoline_probe_handler")
            rec.step("oops", f"The masked word was {taken['task']:#x} at the entry (bucket "
                     f"{taken['bucket']}); by the return the handler's buffer had made it "
                     f"{found['task']:#x} (bucket {found['bucket']}). No instance there: no "
                     f"handler ran, trampoline_post_handler() has no address to resume at, "
                     f"and the kernel BUG stops the CPU in the slot "
                     f"({rec.short(exc.oops.regs['ip'])}).", phase="irq.result",
                     facts={"oops": exc.oops.message, "entry_task": taken["task"],
                            "return_task": found["task"]}, extra=_oops_panel(exc.oops))
        else:
            facts.update(value=value, oops=None)
            rec.step("returned", f"designs_irq returned {value:#x}, and the handler ran "
                     f"once with ax = {seen[0][1]:#x} for task {seen[0][0]:#x}, current: "
                     "design (b) never looks at the stack to find the task.",
                     phase="irq.result", facts={"value": value})
    facts.update(handled=len(seen), current=m.current_addr)
    return rec.finish(), facts


def _tail_scene(design):
    m, k, tramp, rec = _scene(design, "tail", "designs_f")
    rec.narrators["kprobes.swap"] = _swap_in_tail(design, tramp)
    told = []

    def handler(ri, regs, name):
        told.append((name, ri.ret_addr))

    names = ("designs_leaf", "designs_f", "designs_g")
    facts = {"tail_ret": m.symbols.lookup_name("designs_tail_ret"),
             "f_leaf_ret": m.symbols.lookup_name("designs_f_leaf_ret"), "tramp": tramp}
    before = dict(k.traps)
    with rec:
        rec.step("a tail call", f"designs_tail calls designs_f({TAIL_ARG}); F first calls "
                 "designs_leaf, then jumps to designs_g with its own frame gone, so G "
                 f"returns straight to {rec.short(facts['tail_ret'])}. All three are "
                 "kretprobed.", phase="tail.setup", facts=facts)
        k.register_kretprobes([Kretprobe(symbol_name=n, maxactive=returns.MAXACTIVE,
                                         handler=lambda ri, regs, n=n: handler(ri, regs, n))
                               for n in names])
        value = m.call("designs_tail", TAIL_ARG)
        traps = k.traps["int3"] + k.traps["debug"] - before["int3"] - before["debug"]
        g = dict(told)["designs_g"]
        rec.step("returned", f"designs_tail got {value} = 3 x {TAIL_ARG} + 7, so the return "
                 f"landed at {rec.short(facts['tail_ret'])}. G's handler was told "
                 f"ri.ret_addr = {rec.short(g)}"
                 + (": stale, a return address in F whose call was over. (The post handler "
                    "applies the slot's instances newest first; F's, the last, sets ip.)"
                    if design == "stack" else ", and the walk went on to F's instance.")
                 + f" {traps} traps.", phase="tail.result",
                 facts={"value": value, "told": [[n, a] for n, a in told], "traps": traps})
    facts.update(value=value, told=told, traps=traps)
    return rec.finish(), facts


def _exec_scene(design):
    m, k, _tramp, rec = _scene(design, "exec", "sys_execve", flush_on_exec=True,
                               module=False)
    rec.narrators["kprobes.flush"] = _flush_teller(m, design)
    seen = []
    rp = Kretprobe(symbol_name="sys_execve", maxactive=returns.MAXACTIVE,
                   handler=lambda ri, regs: seen.append(regs.ax))
    with rec:
        rec.step("exec", "A kretprobe on sys_execve, which the exec thread calls; exec "
                 "runs flush_old_exec -> flush_thread -> kprobe_flush_task, as in 2.6.13.",
                 phase="exec.setup")
        k.register_kretprobe(rp)
        result = m.run(max_insns=scenes.RUN_LIMIT)
        if result.reason == "oops":
            rec.step("oops", "sys_execve returned through kretprobe_trampoline, and the "
                     "task's bucket has no instance left: the BUG check fires -- the "
                     "known problem of 2.6.13 (kpemu demo exec-bug shows it in full, and the "
                     "2.6.15 fix).", phase="exec.result", facts={"oops": m.oops.message},
                     extra=_oops_panel(m.oops))
        else:
            rec.step("no harm", f"The run went on to power-off ({result.reason}, exit code "
                     f"{m.exit_code}): the restored slot sent sys_execve's ret straight "
                     f"to its caller. Harmless -- but the handler never ran "
                     f"({len(seen)} calls).", phase="exec.result",
                     facts={"reason": result.reason, "exit_code": m.exit_code})
    facts = {"reason": result.reason, "handled": len(seen),
             "oops": m.oops.message if result.reason == "oops" else None}
    return rec.finish(), facts


def record():
    unprobed = scenes.unprobed_final()
    steps = []
    facts = {}
    traps = {}
    for design in DESIGNS:
        def table(rec, design=design):
            if design == DESIGNS[-1]:
                _differences_step(rec, dict(traps, task=rec.steps[-1]["facts"]["traps"]))
        got, f = returns.record_return(design, epilogue=table, unprobed=unprobed)
        traps[design] = f["traps"] = next(s["facts"]["traps"] for s in got
                                          if s["phase"] == "resume" and
                                          s["event"] == "note")
        steps += got
        facts[design] = f
    for step in steps:
        if step["phase"] == "table":
            step["design"] = None                 # one table, in both tracks
    for scene in (_irq_scene, _tail_scene, _exec_scene):
        name = scene.__name__[1:-len("_scene")]
        for design in DESIGNS:
            got, f = scene(design)
            # A scene is told by its bookkeeping: the short runs of guest code between
            # (inside m.call, or the nop's step) are left out.
            steps += [step for step in got if step["event"] != "fastforward"]
            facts[f"{name}.{design}"] = f
    return steps, facts


# -- claims ---------------------------------------------------------------------------------

def _main(lesson, design):
    return [s for s in lesson.steps if s["design"] == design and
            not (s["phase"] or "").split(".")[0] in ("irq", "tail", "exec")]


def _traps(lesson):
    got = {}
    for design in DESIGNS:
        c = _main(lesson, design)[-1]["counters"]
        got[LETTER[design]] = (c["int3"], c["debug"])
    return got == {"(a)": (2, 2), "(b)": (2, 1)}, \
        f"(int3, #DB): {got}; 4 vs 3 traps"


def _phases(lesson):
    rows = {}
    for design in DESIGNS:
        rows[design] = [p for p in dict.fromkeys(s["phase"] for s in _main(lesson, design))
                        if p in returns.PHASES]
    a_only = [p for p in rows["stack"] if p not in rows["task"]]
    ok = rows["stack"] == list(returns.PHASES) and a_only == ["R.db", "R.post"]
    return ok, f"(a) {rows['stack']}; (b) lacks {a_only}"


def _same(lesson):
    f = lesson.facts
    a, b = f["stack"], f["task"]
    ok = (a["same_final"][0] and b["same_final"][0] and a["ax"] == b["ax"] and
          a["ret_addr"] == b["ret_addr"])
    return ok, (f"both returned {b['ax']:#x} to {b['ret_addr']:#x}; final states: "
                f"{a['same_final'][1]} / {b['same_final'][1]}")


def _where_ip_is_set(lesson):
    a = [s["phase"] for s in _main(lesson, "stack") if s["title"] == "trampoline_post_handler"]
    b = [s for s in _main(lesson, "task") if s["event"] == "kprobes.handler-returned"]
    ok = a == ["R.post"] and b and b[0]["facts"]["value"] == 1 and \
        b[0]["facts"]["ip"] == lesson.facts["task"]["ret_addr"]
    return ok, f"(a) sets ip in {a}; (b) pre handler returned {b[0]['facts']['value']}"


def _key(lesson):
    f = lesson.facts
    a = next(s for s in _main(lesson, "stack") if s["phase"] == "R.handler" and
             s["title"] == "trampoline_probe_handler")["facts"]
    b = next(s for s in _main(lesson, "task") if s["phase"] == "R.handler" and
             s["title"] == "trampoline_probe_handler")["facts"]
    ok = a["task"] == b["task"] == f["task"]["task"] and a["slot"] == f["stack"]["slot"]
    return ok, (f"(a) masked slot {a['slot']:#x} -> task {a['task']:#x}; (b) current "
                f"{b['task']:#x} (the same here: a task's own stack)")


def _irq(lesson):
    a, b = lesson.facts["irq.stack"], lesson.facts["irq.task"]
    bucket_in = hash_ptr(0)
    ok = (a["handled"] == 0 and a["oops"] is not None and "no instance" in a["oops"] and
          b["handled"] == 1 and b["value"] == IRQ_ARG + 1 and b["oops"] is None and
          a["low"] <= a["masked"] < a["high"])
    return ok, (f"(a) {a['handled']} handler calls, oops: {a['oops']}; (b) returned "
                f"{b['value']}, {b['handled']} call (mask -> {a['masked']:#x}, bucket "
                f"{bucket_in} at entry)")


def _tail(lesson):
    a, b = lesson.facts["tail.stack"], lesson.facts["tail.task"]
    ga, gb = dict(a["told"])["designs_g"], dict(b["told"])["designs_g"]
    fa, fb = dict(a["told"])["designs_f"], dict(b["told"])["designs_f"]
    ok = (a["value"] == b["value"] == 3 * TAIL_ARG + 7 and ga == a["f_leaf_ret"] and
          gb == b["tramp"] and fa == fb == a["tail_ret"] and
          [n for n, _ in b["told"]] == ["designs_leaf", "designs_g", "designs_f"] and
          (a["traps"], b["traps"]) == (10, 8))
    return ok, (f"G told {ga:#x} in (a) (stale), {gb:#x} in (b); F {fa:#x}; "
                f"traps {a['traps']} vs {b['traps']}")


def _exec(lesson):
    a, b = lesson.facts["exec.stack"], lesson.facts["exec.task"]
    ok = a["reason"] == "halt" and a["handled"] == 0 and b["reason"] == "oops" and \
        "no instance" in b["oops"]
    return ok, f"(a) {a['reason']}, {a['handled']} handler calls; (b) {b['oops']}"


def _tables(lesson):
    tables = [s for s in lesson.steps if s["phase"] == "table"]
    return len(tables) == 1 and tables[0]["design"] is None, \
        f"{len(tables)} table step(s), in both tracks"


DEMO = Demo(
    name="designs",
    question="June 2005 vs the redesign, side by side: why key instances by task?",
    tier="C",
    confusions=(4,),
    record=record,
    claims=[
        Claim("traps for one probed return: (a) int3 2 + #DB 2 = 4, (b) int3 2 + #DB 1 = 3",
              _traps),
        Claim("(a) has every phase row, (b) all but R.db and R.post", _phases),
        Claim("both designs return the same value to the same caller; both final states == "
              "the unprobed run's", _same),
        Claim("(a) sets ip in the trampoline's post handler, (b) in its pre handler, "
              "which returns 1", _where_ip_is_set),
        Claim("the key: (a) masks the slot address to a task, (b) takes current", _key),
        Claim("on an interrupt stack (a) finds no instance and oopses; (b) runs the handler",
              _irq),
        Claim("tail call: (a) tells G a stale ret_addr, (b) the trampoline, then F's; "
              "both land at designs_tail_ret", _tail),
        Claim("exec with the 2.6.13 flush: harmless in (a), the BUG in (b)", _exec),
        Claim("one table of differences, shared by both tracks", _tables),
    ],
    prose=("The same kretprobe on sys_mkdir, recorded twice: under design (a), the June "
           "2005 original that keys instances by the stack address of the return slot, "
           "and under design (b), the redesign that shipped in 2.6.13 and keys them by "
           "the task. In the stepper, d switches design at the same phase."),
    after=("Design (a) finds its instance through the stack: masking the slot's address "
           "only finds the task on a task's own stack, and one static address serves every "
           "frame. Design (b) keys by current and lets the instances form a per-task "
           "stack -- at the price of exec, until 2.6.15 flushed only on exit."),
)
