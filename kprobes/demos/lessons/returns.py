"""What the return-probe lessons share (kretprobe, designs, stacktrace): one probed return of
sys_mkdir recorded under either kretprobe design and told phase by phase, with the phase
names the designs demo aligns its two columns on, and a backtrace shown raw and resolved.

The workload's mkdir thread calls mkdir("/tmp") through int $0x80; system_call reaches
sys_mkdir by an indirect call through sys_call_table, so the return address the kretprobe
hijacks is inside system_call.

Not a demo (it defines no DEMO).  Only the public API and the observer.
"""

from kprobes import Kretprobe
from kprobes.demos import scenes
from kprobes.demos.lesson import DESIGN_NAMES, Recorder
from kprobes.kretprobe import hash_ptr

TARGET = "sys_mkdir"
MAXACTIVE = 4          # small, so the free list visibly goes 4 -> 3 -> 4
TRAMPOLINE = "kretprobe_trampoline"
# The rows the designs demo aligns: entry, body, return; R.db and R.post are design (a)'s.
PHASES = ("E.int3", "E.pre/swap", "E.db", "body", "R.ret", "R.int3", "R.handler", "R.db",
          "R.post", "resume")


def task_label(m, task):
    """`comm-pid at 0x...` for a real task, the bare address for anything else."""
    for t in m.tasks():
        if t.addr == task:
            return f"{t} at {task:#x}"
    return f"{task:#x} (no task there)"


def return_narrators(m, design):
    """The narrators of a return lesson: each mechanism event told with its phase."""
    tramp = m.symbols.lookup_name(TRAMPOLINE)

    def at_tramp(p):
        return p is not None and p.addr == tramp

    def trap(rec, ev):
        p = ev.probe
        if ev.vector == 3 and at_tramp(p):
            return ("int3 at the trampoline", f"The CPU executes the int3 at "
                    f"{rec.short(ev.ip)}: the trampoline's own probe, armed by "
                    f"arch_init_kprobes() at boot. kprobe_handler() finds it at ip - 1 = "
                    f"{ev.ip:#x}.", "R.int3", {"probe_addr": ev.ip, "vector": 3})
        if ev.vector == 1 and at_tramp(p):
            return ("#DB after the nop", f"The nop ran alone in the trampoline probe's "
                    f"slot and raised a debug trap at {rec.short(ev.ip)}: design (a) "
                    "single-steps the trampoline's nop like any probed instruction.",
                    "R.db", {"ip": ev.ip, "vector": 1})
        if ev.vector == 3:
            return ("int3 at the entry", f"The mkdir thread's system call reaches "
                    f"{rec.short(ev.ip)}, whose first byte is cc: int3 traps with ip "
                    f"{ev.ip + 1:#x}, and kprobe_handler() finds the kretprobe's entry probe "
                    f"at ip - 1 = {ev.ip:#x}.", "E.int3",
                    {"probe_addr": ev.ip, "trap_ip": ev.ip + 1, "vector": 3})
        if ev.vector == 1:
            return ("#DB after the entry copy", f"The copy of the first instruction ran "
                    f"alone in the slot and raised a debug trap at {rec.short(ev.ip)}.",
                    "E.db", {"ip": ev.ip, "vector": 1})
        return None

    def handler(rec, ev):
        p = ev.probe
        regs = ev.regs
        if ev.which == "pre_handler" and at_tramp(p):
            sp = regs["sp"]
            slot = sp - 8
            if design == "task":
                task = m.current_addr
                return ("trampoline_probe_handler", f"Its pre_handler, "
                        f"trampoline_probe_handler(), takes the task from current "
                        f"({task_label(m, task)}) and walks bucket {hash_ptr(task)} from "
                        "the head, calling the handler of each of that task's instances "
                        "until one holds a real return address.", "R.handler",
                        {"task": task, "bucket": hash_ptr(task), "sp": sp})
            task = rec.k.kretprobes.arch.task_of_stack(slot)   # arch_get_kprobe_task()
            return ("trampoline_probe_handler", f"Design (a)'s pre_handler takes the slot "
                    f"ret just popped, sp - 8 = {slot:#x}, masks it to its THREAD_SIZE "
                    f"block and reads the task there: {task_label(m, task)}. In bucket "
                    f"{hash_ptr(task)} it calls the handler of every instance of that slot.",
                    "R.handler", {"slot": slot, "task": task, "bucket": hash_ptr(task),
                                  "sp": sp})
        if ev.which == "pre_handler":
            return ("pre_handler_kretprobe", f"The entry probe's pre_handler is "
                    f"pre_handler_kretprobe(), called with regs.ip = {regs['ip']:#x} (the "
                    f"probe + 1) and regs.sp = {regs['sp']:#x}. At a function's first "
                    "instruction [sp] is the return address.", "E.pre/swap",
                    {"regs_ip": regs["ip"], "sp": regs["sp"], "addr": p.addr})
        if ev.which == "handler":
            ri = ev.instance
            name = p.symbol_name
            return (f"{name} handler", f"{name}'s kretprobe handler runs with "
                    f"regs.ax = {regs['ax']:#x}, the value {name} returned, and "
                    f"ri.ret_addr = {rec.short(ri.ret_addr)}, where this call returns.",
                    "R.handler", {"ax": regs["ax"], "ret_addr": ri.ret_addr,
                                  "task": ri.task})
        if ev.which == "post_handler" and at_tramp(p):
            return ("trampoline_post_handler", "After the step, design (a)'s "
                    "trampoline_post_handler() sets ip to each instance's ret_addr of the "
                    "popped slot, recycles them, and clears TF.", "R.post",
                    {"ip": regs["ip"]})
        return None

    def returned(rec, ev):
        if not at_tramp(ev.probe) or ev.which != "pre_handler":
            return None
        if ev.value:
            return ("no single-step", f"trampoline_probe_handler() set regs.ip = "
                    f"{rec.short(ev.regs['ip'])}, the instance's ret_addr, and returned "
                    f"{ev.value}: kprobe_handler() returns at once, with no single-step and "
                    "no #DB.", "R.handler", {"value": ev.value, "ip": ev.regs["ip"]})
        return ("the nop is stepped", f"Design (a)'s pre_handler returned {ev.value}: "
                "ip is still in the trampoline, so kprobes single-steps its nop out of "
                "line, as for any probe.", "R.db", {"value": ev.value})

    def swap(rec, ev):
        rec.stack_notes[ev.slot] = (ev.old, ev.new)
        name = ev.instance.rp.symbol_name
        return ("arch_prepare_kretprobe", f"arch_prepare_kretprobe(): the stack slot at "
                f"sp = {ev.slot:#x} held the return address {rec.short(ev.old)}; it now "
                f"holds {rec.short(ev.new)}, so {name}'s ret will go to the "
                "trampoline.", "E.pre/swap",
                {"slot": ev.slot, "old": ev.old, "new": ev.new})

    def instance(rec, ev):
        ri = ev.instance
        rp = ri.rp
        free = len(rp.free_instances) if rp else 0
        if ev.what == "taken":
            key = (f"current, {task_label(m, ev.task)}" if design == "task" else
                   f"the task found by masking the slot address, {task_label(m, ev.task)}")
            return ("instance taken", f"An instance is taken from the free list "
                    f"({free + 1} -> {free} free), its ret_addr = {rec.short(ri.ret_addr)}, "
                    f"and pushed at the head of bucket {ev.bucket}, the hash of "
                    f"{key}.", "E.pre/swap",
                    {"free": free, "bucket": ev.bucket, "task": ev.task,
                     "ret_addr": ri.ret_addr, "slot": ri.stack_addr})
        owner = f"{rp.symbol_name}'s instance" if rp else "The orphaned instance"
        return (f"instance {ev.what}", f"{owner} is {ev.what}: out of bucket "
                f"{ev.bucket}, back on the free list ({free} free).",
                "R.handler" if design == "task" else "R.post",
                {"what": ev.what, "bucket": ev.bucket, "free": free})

    def singlestep(rec, ev):
        phase = "R.db" if at_tramp(ev.probe) else "E.db"
        return ("prepare_singlestep", f"prepare_singlestep(): TF=1, IF=0, ip = the slot "
                f"{ev.slot:#x}, so returning from the trap runs the copy ({ev.insn}) and "
                "traps again.", phase, {"slot": ev.slot, "flags": ev.flags})

    def fixup(rec, ev):
        if at_tramp(ev.probe):
            return ("resume_execution skipped", f"post_kprobe_handler() leaves ip alone "
                    f"for the trampoline probe (its post handler set it): the CPU returns "
                    f"to {rec.short(ev.ip)}.", "resume", {"ip": ev.ip, "flags": ev.flags})
        return ("resume_execution", f"resume_execution() moves ip from "
                f"{rec.short(ev.from_ip)} to {rec.short(ev.ip)} in {ev.probe.symbol_name}, and the "
                "trapped TF and IF come back.", "E.db",
                {"from_ip": ev.from_ip, "ip": ev.ip, "flags": ev.flags})

    def register(rec, ev):
        p = ev.probe
        if rec.probe is None and p.ainsn is not None:
            rec.probe = p
        rp = p.kretprobe
        if rp is None or p.ainsn is None:
            return None
        return ("register_kretprobe", f"register_kretprobe(): {rp.maxactive} instances on "
                f"the free list (maxactive), and the entry kprobe copies the first "
                f"instruction ({p.ainsn.text}) into the slot at {ev.slot:#x}.", "arm",
                {"addr": ev.addr, "slot": ev.slot, "maxactive": rp.maxactive})

    return {"kprobes.trap": trap, "kprobes.handler": handler,
            "kprobes.handler-returned": returned, "kprobes.swap": swap,
            "kprobes.instance": instance, "kprobes.singlestep": singlestep,
            "kprobes.fixup": fixup, "kprobes.register": register}


def record_return(design, in_handler=None, epilogue=None, unprobed=None):
    """Record the first probed return of sys_mkdir under `design` ("task" or "stack").
    `in_handler(rec, ri, regs)` runs inside the kretprobe's handler (to add a step there),
    `epilogue(rec)` after the resume step.  Returns (steps, facts); facts include the final
    state compared with the unprobed run's (`unprobed`, recorded here when not given)."""
    if unprobed is None:
        unprobed = scenes.unprobed_final()
    m, k = scenes.booted(design=design)
    rec = Recorder(m, k, design=design)
    rec.narrators.update(return_narrators(m, design))
    rec.watch(TARGET)
    fn = m.symbols.get(TARGET)
    tramp = m.symbols.lookup_name(TRAMPOLINE)
    seen = {}

    def handler(ri, regs):
        if "ax" in seen:
            return
        seen.update(ax=regs.ax, ret_addr=ri.ret_addr, task=ri.task, slot=ri.stack_addr,
                    handler_ip=regs.ip, handler_sp=regs.sp)
        if in_handler is not None:
            in_handler(rec, ri, regs)

    rp = Kretprobe(symbol_name=TARGET, handler=handler, maxactive=MAXACTIVE)
    def entry_done(ev):
        return ev.kind == "kprobes.fixup" and ev.probe is rp.kp

    # design (b) resumes in the trampoline's pre_handler, design (a) after its step
    returned = "kprobes.handler-returned" if design == "task" else "kprobes.fixup"

    def return_done(ev):
        return ev.kind == returned and ev.probe.addr == tramp

    with rec:
        rec.step("before", f"sys_mkdir starts at {fn.addr:#x}; the trampoline, "
                 f"{TRAMPOLINE} at {tramp:#x}, is a nop whose byte the trampoline probe "
                 f"made cc at boot. Kretprobe {DESIGN_NAMES[design]}.", phase="before",
                 facts={"addr": fn.addr, "tramp": tramp,
                        "tramp_byte": m.read(tramp, 1)[0],
                        "tramp_original": m.text_byte(tramp)})
        k.register_kretprobe(rp)
        scenes.run_until_event(m, entry_done)
        last = {}

        def at_trampoline(ip):
            if fn.addr <= ip < fn.addr + fn.size:
                last["ip"] = ip
            return ip == tramp

        scenes.step_until(m, at_trampoline)
        rec.watch(TRAMPOLINE)
        sp = m.engine.reg("sp")
        rec.step("ret to the trampoline", f"sys_mkdir's ret at {rec.short(last['ip'])} "
                 f"popped the slot at {sp - 8:#x}, which holds {TRAMPOLINE}: rip = "
                 f"{tramp:#x} and sp = {sp:#x}. The byte there is "
                 f"{m.read(tramp, 1)[0]:02x}, not the nop's {m.text_byte(tramp):02x}.",
                 phase="R.ret", facts={"ret_at": last["ip"], "slot": sp - 8, "sp": sp,
                                       "ip": m.engine.reg("ip"),
                                       "byte": m.read(tramp, 1)[0]})
        scenes.run_until_event(m, return_done)
        rec.watch("system_call")
        ip = m.engine.reg("ip")
        counted = rec.steps[-1]["counters"]
        rec.step("resume in the caller", f"The CPU is back in the caller at "
                 f"{rec.short(ip)} with rax = {m.engine.reg('ax'):#x}, as if sys_mkdir had "
                 f"returned there directly. This probed call took "
                 f"{counted['int3'] + counted['debug']} traps in all, entry and return: "
                 f"{counted['int3']} int3 and {counted['debug']} #DB.", phase="resume",
                 facts={"ip": ip, "ax": m.engine.reg("ax"),
                        "traps": counted["int3"] + counted["debug"]})
        if epilogue is not None:
            epilogue(rec)
    steps = rec.finish()
    for step in steps:            # the setup before the entry trap is not a phase row
        if step["phase"] == "E.int3":
            break
        step["phase"] = "before"
    probed = scenes.final_state(m)
    facts = dict(seen, addr=fn.addr, tramp=tramp, maxactive=MAXACTIVE,
                 nmissed=rp.nmissed, free_after=len(rp.free_instances),
                 same_final=scenes.same_final(unprobed, probed))
    return steps, facts


def trace_panel(m, regs, title):
    """An extra panel: the backtrace from `regs`, raw (the frame chain as the stack holds
    it) beside resolved (the unwinder maps the trampoline back through the instance),
    rows that differ marked `*`.  Returns (panel, raw, resolved)."""
    raw = m.format_trace(m.stack_trace(regs, resolve=False))
    resolved = m.format_trace(m.stack_trace(regs))
    lines = [f"  {'raw (no resolver: Linux < 5.15)':<44}  resolved (Linux >= 5.15)"]
    for n in range(max(len(raw), len(resolved))):
        a = raw[n] if n < len(raw) else ""
        b = resolved[n] if n < len(resolved) else ""
        lines.append(f"{'*' if a != b else ' '} #{n} {a:<41}  #{n} {b}")
    return {"title": title, "lines": lines}, raw, resolved
