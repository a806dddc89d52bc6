"""stacktrace: why the trampoline appears in backtraces -- a kretprobe on sys_mkdir and a
kprobe in its body: the return address sys_mkdir itself would read, and backtraces from the
kprobe and from the return handler, each raw (the frame chain as the stack holds it: what
bpftrace #101 and ply #32 showed) and resolved (the unwinder maps the trampoline back
through the task's instance, as Linux does since 5.15)."""

from kprobes import Kprobe, Kretprobe
from kprobes.demos import scenes
from kprobes.demos.lesson import Claim, Demo, Recorder
from kprobes.demos.lessons import returns

TARGET = returns.TARGET
# Past sys_mkdir's prologue (push %rbp; mov %rsp,%rbp; push %r13; push %r12): the frame
# is set up, [rbp + 8] is the return slot.
BODY_OFFSET = 0x11
DESIGN = "task"


def _frame(name):
    return name.split("/")[0]


def record():
    unprobed = scenes.unprobed_final()
    m, k = scenes.booted(design=DESIGN)
    tramp = m.symbols.lookup_name(returns.TRAMPOLINE)
    rec = Recorder(m, k, design=DESIGN)
    told = returns.return_narrators(m, DESIGN)
    rec.narrators = {kind: told[kind] for kind in ("kprobes.swap", "kprobes.instance")}
    rec.watch(TARGET)
    fn = m.symbols.get(TARGET)
    facts = {"tramp": tramp, "addr": fn.addr}

    def in_body(p, regs):
        if "body" in facts:
            return 0
        slot = regs.bp + 8
        value = m.mem.u64(slot)
        rec.stack_labels[regs.bp] = "<- rbp"
        panel, raw, resolved = returns.trace_panel(m, regs, "BACKTRACE from the kprobe at "
                                                   f"{TARGET}+{BODY_OFFSET:#x}")
        facts["body"] = {"bp": regs.bp, "slot": slot, "value": value, "raw": raw,
                         "resolved": resolved}
        rec.step("__builtin_return_address(0)", f"A kprobe at {rec.short(regs.ip - 1)}, "
                 f"past the prologue: rbp = {regs.bp:#x}, and [rbp+8] (the row after it) holds "
                 f"{rec.short(value)} -- what __builtin_return_address(0) reads in "
                 f"{TARGET} now. A raw backtrace (from regs.ip, the probe + 1) names the "
                 "trampoline as the caller too.",
                 phase="body", facts=facts["body"], extra=panel)
        del rec.stack_labels[regs.bp]            # this frame's rbp, for this step only
        return 0

    def on_return(ri, regs):
        if "handler" in facts:
            return
        panel, raw, resolved = returns.trace_panel(m, regs, "BACKTRACE from the return "
                                                   "handler")
        facts["handler"] = {"raw": raw, "resolved": resolved, "ret_addr": ri.ret_addr,
                            "slot": ri.stack_addr}
        rec.step("backtrace in the handler", f"In the return handler the raw backtrace "
                 f"starts at {_frame(raw[0])}: ret has popped the slot, and the trap ip is "
                 "in the trampoline. The resolved one starts at the caller, "
                 f"{_frame(resolved[0])}.", phase="R.handler",
                 facts=facts["handler"], extra=panel)
        bucket = [ri2 for ri2 in k.kretprobes.instances() if ri2.task == ri.task]
        rec.step("how it is resolved", f"The unwinder met kretprobe_trampoline read from "
                 f"the slot at {ri.stack_addr:#x} (and the trap ip just past it). It looks "
                 f"through the task's instances ({len(bucket)} in its bucket) for the one "
                 f"that hijacked that slot and prints its ret_addr, "
                 f"{rec.short(ri.ret_addr)}, instead: Linux 5.15's unwinder does the same.",
                 phase="R.handler", facts={"slot": ri.stack_addr, "ret_addr": ri.ret_addr,
                                           "instances": len(bucket)})

    rp = Kretprobe(symbol_name=TARGET, handler=on_return, maxactive=returns.MAXACTIVE)
    kp = Kprobe(symbol_name=TARGET, offset=BODY_OFFSET, pre_handler=in_body)
    with rec:
        rec.step("before", f"A kretprobe on {TARGET} and a kprobe at {TARGET}+"
                 f"{BODY_OFFSET:#x}, past its prologue. The workload's mkdir thread calls "
                 f"{TARGET} from system_call.", phase="before", facts={"addr": fn.addr})
        k.register_kretprobe(rp)
        k.register_kprobe(kp)
        scenes.run_until_event(m, lambda ev: ev.kind == "kprobes.handler-returned" and
                               ev.probe.addr == tramp)
        rec.watch("system_call")
        ip = m.engine.reg("ip")
        rec.step("after the return", f"Back in the caller at {rec.short(ip)}: the "
                 "instance is recycled, and no backtrace taken from now on meets the "
                 "trampoline.", phase="resume", facts={"ip": ip})
    facts["same_final"] = scenes.same_final(unprobed, scenes.final_state(m))
    facts["caller"] = facts["handler"]["ret_addr"]
    return rec.finish(), facts


def _body_slot(lesson):
    f = lesson.facts
    body = f["body"]
    swap = lesson.first(event="kprobes.swap")["facts"]
    return body["value"] == f["tramp"] and body["slot"] == swap["slot"], \
        f"[rbp+8] = [{body['slot']:#x}] = {body['value']:#x}; hijacked slot {swap['slot']:#x}"


def _raw_names_tramp(lesson):
    f = lesson.facts
    raw = f["body"]["raw"]
    ok = _frame(raw[0]) == f"{TARGET}+{BODY_OFFSET + 1:#x}" and \
        _frame(raw[1]) == f"{returns.TRAMPOLINE}+0x0"
    return ok, f"raw: {raw[:2]}"


def _resolved_names_caller(lesson):
    f = lesson.facts
    body, handler = f["body"], f["handler"]
    caller = lesson.first(phase="resume")["where"]["sym"]
    ok = (_frame(body["resolved"][1]) == caller == _frame(handler["resolved"][0]) and
          f["caller"] == lesson.first(phase="resume")["where"]["ip"])
    return ok, (f"resolved from the kprobe: {body['resolved'][1]}; from the handler: "
                f"{handler['resolved'][0]}; the return went to {caller}")


def _handler_raw(lesson):
    raw = lesson.facts["handler"]["raw"]
    return _frame(raw[0]) == f"{returns.TRAMPOLINE}+0x1", f"raw #0 {raw[0]}"


def _resolved_clean(lesson):
    f = lesson.facts
    names = f["body"]["resolved"] + f["handler"]["resolved"]
    bad = [n for n in names if n.startswith(returns.TRAMPOLINE)]
    same = f["body"]["raw"][2:] == f["body"]["resolved"][2:] and \
        f["handler"]["raw"][1:] == f["handler"]["resolved"][1:]
    return not bad and same, f"trampoline frames in the resolved traces: {bad}; the rest " \
        f"{'identical' if same else 'differs'}"


DEMO = Demo(
    name="stacktrace",
    question="Why does kretprobe_trampoline appear in backtraces?",
    tier="C",
    confusions=(4,),
    record=record,
    claims=[
        Claim("while sys_mkdir runs, [rbp+8] (its __builtin_return_address) is "
              "kretprobe_trampoline, in the slot the kretprobe hijacked", _body_slot),
        Claim("the raw backtrace from its body names kretprobe_trampoline as the caller",
              _raw_names_tramp),
        Claim("the raw backtrace from the return handler starts in the trampoline",
              _handler_raw),
        Claim("resolved, both name the real caller: the instance's ret_addr, where the "
              "return went", _resolved_names_caller),
        Claim("resolved traces hold no trampoline frame; below it they equal the raw ones",
              _resolved_clean),
        scenes.same_final_claim(),
    ],
    prose=("A kretprobe replaces the return address on the stack, so everything that reads "
           "it -- the function itself, a backtrace, a profiler -- sees "
           "kretprobe_trampoline until the function returns. Linux 5.15 taught the x86 "
           "unwinders to map it back through the task's kretprobe instances."),
    after=("The raw backtraces are what tools printed before 5.15 (bpftrace #101, ply #32): "
           "the hijack is real, not a symbolisation bug. The resolved ones are m.stack_trace(), "
           "which does what the 5.15 unwinder does."),
)
