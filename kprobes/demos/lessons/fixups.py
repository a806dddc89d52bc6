"""fixups: why the copy needs repairs -- one short scene per kind of instruction that
resume_execution() treats differently, on the functions of kernel_images/lessons/
lesson_targets.S, each called with m.call under a kprobe on the one instruction of the
scene.  Each scene has the three states of its instruction: before the single-step (ip at
the copy in the slot), raw after it (the #DB), and after the fix-up; then the function's
result against the unprobed call.

The last scene is 2.6.13's `call *%rax` bug, reproduced by the arch's non-default
ff_test_2613 switch (kprobes/arch/x86_64/insn.py): the 0xff test masked the opcode byte,
not ModRM, so the indirect call was relocated like a mov.
"""

from dataclasses import dataclass

from emu import GuestFault
from emu.cpu import X86_EFLAGS_IF, X86_EFLAGS_TF
from kernel_images import LESSON_TARGETS
from kprobes import Kprobe
from kprobes.demos import scenes
from kprobes.demos.lesson import Claim, Demo, LessonError, Recorder, disassemble

# How far the 2.6.13 scene lets the guest run from its wild ip before m.call gives up.
LOST_LIMIT = 1000
MODULE = "lessons"          # the module's name, as kallsyms shows it: lt_mov+0x0 [lessons]


@dataclass(frozen=True)
class Scene:
    key: str              # the facts' key
    title: str
    fn: str               # the function called
    probed: str           # the function holding the probed instruction
    mnemonic: str         # the probed instruction, found by decoding `probed`
    args: tuple = ()
    bug_2613: bool = False


SCENES = (
    Scene("mov", "mov", "lt_mov", "lt_mov", "mov", (41,)),
    Scene("riprel", "rip-relative load", "lt_riprel", "lt_riprel", "mov"),
    Scene("jcc_taken", "jcc taken", "lt_jcc", "lt_jcc", "jl", (1, 2)),
    Scene("jcc_not_taken", "jcc not taken", "lt_jcc", "lt_jcc", "jl", (2, 1)),
    Scene("call", "call rel32", "lt_call", "lt_call", "call"),
    Scene("ret", "ret", "lt_ret", "lt_ret_leaf", "ret"),
    Scene("pushf", "pushf", "lt_pushf", "lt_pushf", "pushfq"),
    Scene("cli", "cli", "lt_cli", "lt_cli", "cli"),
    Scene("sti", "sti", "lt_sti", "lt_sti", "sti"),
    Scene("call_indirect", "call *%rax (fixed)", "lt_call_indirect", "lt_call_indirect",
          "call"),
    Scene("call_indirect_2613", "call *%rax (2.6.13)", "lt_call_indirect",
          "lt_call_indirect", "call", bug_2613=True),
)


def _flags(value):
    return f"TF={int(bool(value & X86_EFLAGS_TF))} IF={int(bool(value & X86_EFLAGS_IF))}"


def find_insn(m, fn, mnemonic):
    """(addr, length, text) of the first `mnemonic` in function `fn`."""
    sym = m.symbols.get(fn)
    for addr, size, _code, text in disassemble(m.read(sym.addr, sym.size), sym.addr):
        if text.split()[0] == mnemonic:
            return addr, size, text
    raise LessonError(f"{fn} has no {mnemonic}: lesson_targets.o is not the lesson's")


class FixupsLesson:
    """The narrators of the three states, and the facts of each scene."""

    def __init__(self, m, k, rec):
        self.m = m
        self.k = k
        self.rec = rec
        self.scene = None
        self.p = None
        self.facts = {}
        for kind in ("kprobes.register", "kprobes.arm", "kprobes.disarm"):
            rec.narrators.pop(kind)
        rec.narrators["kprobes.trap"] = self.tell_trap
        rec.narrators["kprobes.singlestep"] = self.tell_before
        rec.narrators["kprobes.fixup"] = self.tell_fixed

    @property
    def f(self):
        return self.facts[self.scene.key]

    def top(self):
        return self.m.read_u64(self.m.engine.reg("sp"))

    def short(self, addr):
        """The recorder's name for addr, without the module (every scene's is the same)."""
        return self.rec.short(addr).replace(f" [{MODULE}]", "")

    # -- the three states -----------------------------------------------------------------

    def tell_before(self, rec, ev):
        f = self.f
        f["before"] = {"ip": ev.ip, "flags": ev.flags, "sp": self.m.engine.reg("sp"),
                       "top": self.top(), "trapped_flags": self.m.engine.reg("flags")}
        text, extra = BEFORE[self.scene.key](self, f)
        rec.step(f"{self.scene.title}: before the step",
                 f"{self.scene.title}: the int3 at {self.short(f['addr'])} trapped and "
                 f"ip = the slot {ev.slot:#x}, TF=1 IF=0. " + text,
                 phase="before", facts={"scene": self.scene.key, **f["before"]},
                 event=ev.kind, overrides={"ip": ev.ip, "flags": ev.flags}, covers_run=True,
                 extra=extra)
        return None

    def tell_trap(self, rec, ev):
        if ev.vector != 1:
            return None
        f = self.f
        f["raw"] = {"ip": ev.ip, "flags": self.m.engine.reg("flags"),
                    "sp": self.m.engine.reg("sp"), "top": self.top()}
        text, extra = RAW[self.scene.key](self, f)
        rec.step(f"{self.scene.title}: raw after the step",
                 f"The copy ran and the #DB came with ip = {self.short(ev.ip)}. " + text,
                 phase="raw", facts={"scene": self.scene.key, **f["raw"]},
                 event=ev.kind, vector=1, extra=extra)
        return None

    def tell_fixed(self, rec, ev):
        f = self.f
        f["fixed"] = {"ip": ev.ip, "flags": ev.flags, "sp": self.m.engine.reg("sp"),
                      "top": self.top(), "resume": ev.resume.name, "sym": self.short(ev.ip)}
        text, extra = FIXED[self.scene.key](self, f)
        rec.step(f"{self.scene.title}: after the fix-up",
                 f"resume_execution() ({ev.resume.name}): " + text,
                 phase="fixed", facts={"scene": self.scene.key, **f["fixed"]},
                 event=ev.kind, overrides={"ip": ev.ip, "flags": ev.flags}, extra=extra)
        return None

    # -- a scene --------------------------------------------------------------------------

    def play(self, scene, unprobed):
        m, k, rec = self.m, self.k, self.rec
        addr, length, text = find_insn(m, scene.probed, scene.mnemonic)
        self.scene = scene
        self.facts[scene.key] = {"addr": addr, "length": length, "text": text,
                                 "unprobed": unprobed}
        k.arch.ff_test_2613 = scene.bug_2613
        p = Kprobe(addr=addr)
        try:
            k.register_kprobe(p)
        finally:
            k.arch.ff_test_2613 = False
        self.p = p
        self.f.update(slot=p.ainsn.slot, copy=p.ainsn.copy[:length], resume=p.ainsn.resume.name)
        rec.probe = p
        rec.watch(scene.probed)
        callee = m.symbols.lookup_name("lt_callee")
        callee_byte = m.read(callee, 1)[0]
        try:
            result = m.call(scene.fn, *scene.args, max_insns=LOST_LIMIT)
        except GuestFault as exc:
            result = None
            self.f["lost"] = {"message": exc.oops.message, "ip": exc.oops.regs["ip"],
                              "ax": exc.oops.regs["ax"],
                              "callee_byte": [callee_byte, m.read(callee, 1)[0]]}
        self.f["result"] = result
        k.unregister_kprobe(p)
        text, extra = RESULT[scene.key](self, self.f)
        rec.step(f"{scene.title}: the result", text, phase="result",
                 facts={"scene": scene.key, "result": result, "unprobed": unprobed},
                 extra=extra)


def record():
    m, k = scenes.booted()
    m.load_module(LESSON_TARGETS, name=MODULE)
    unprobed = {s.key: m.call(s.fn, *s.args) for s in SCENES if not s.bug_2613}
    rec = Recorder(m, k)
    lesson = FixupsLesson(m, k, rec)
    clock = m.clock.now
    with rec:
        for scene in SCENES:
            lesson.play(scene, unprobed.get(scene.key, unprobed["call_indirect"]))
    return rec.finish(), {"scenes": lesson.facts, "clock": [clock, m.clock.now],
                          "lt_value": m.read_u64(m.symbols.lookup_name("lt_value")),
                          "lt_value_addr": m.symbols.lookup_name("lt_value"),
                          "lt_callee": m.symbols.lookup_name("lt_callee")}


# -- the words of each scene: (narration, extra panel or None) from the scene's facts ------

def _panel(title, lines):
    return {"title": title, "lines": lines}


def _relocated(f, ip):
    return f["addr"] + (ip - f["slot"])


def _reloc_line(lesson, f, ip):
    fixed = _relocated(f, ip)
    return (f"  ip        {lesson.short(ip):<22} -> {lesson.short(fixed):<22} orig + (ip - "
            f"slot) = orig + {ip - f['slot']:#x}")


def _ret_line(lesson, f, raw, fixed, rule="orig + (ret - slot)"):
    return (f"  [sp]      {lesson.short(raw):<22} -> {lesson.short(fixed):<22} {rule}")


def _before_plain(lesson, f):
    return (f"The copy in the slot is {f['text']!r}, byte for byte the original.", None)


def _before_riprel(lesson, f):
    off = lesson.p.ainsn.disp_offset
    length = f["length"]
    old = int.from_bytes(lesson.p.ainsn.insn[off:off + 4], "little", signed=True)
    new = int.from_bytes(f["copy"][off:off + 4], "little", signed=True)
    target = f["addr"] + length + old
    f["disp"] = {"old": old, "new": new, "offset": off, "target": target}
    return (f"This fix-up was made at copy time: the disp32 at byte {off} was rewritten from "
            f"{old:#x} to {new:#x} (marked ^^ in SLOT), so the copy still reads "
            f"{lesson.short(target)}.",
            _panel("the displacement, rewritten by register_kprobe()", [
                f"  orig + len + old = {f['addr']:#x} + {length} + {old:#x} = {target:#x}",
                f"  slot + len + new = {f['slot']:#x} + {length} + {new:#x} = "
                f"{f['slot'] + length + new:#x}",
                "  new = orig + old - slot: the length cancels, the target is the same"]))


def _before_call(lesson, f):
    rel = int.from_bytes(f["copy"][1:5], "little", signed=True)
    return (f"The copy's rel32 ({rel:#x}) is byte for byte the original, so from the slot "
            f"it points to slot + 5 + {rel:#x}, and the call will push slot + 5.", None)


def _before_indirect(lesson, f):
    ax = lesson.m.engine.reg("ax")
    return (f"rax = {ax:#x} ({lesson.short(ax)}), an absolute target; the call will push "
            f"slot + {f['length']} as its return address.", None)


def _before_flags(lesson, f):
    trapped = f["before"]["trapped_flags"]
    return (f"The int3 trapped with {_flags(trapped)}; kprobes keeps those in "
            "kprobe_saved_rflags and steps the copy with IF off.", None)


def _raw_plain(lesson, f):
    ip = f["raw"]["ip"]
    return (f"That is slot + {ip - f['slot']} ({f['length']} bytes in): in the original "
            f"function it means {lesson.short(_relocated(f, ip))}.", None)


def _raw_jcc(lesson, f):
    ip = f["raw"]["ip"]
    taken = ip != f["slot"] + f["length"]
    f["taken"] = taken
    how = (f"the jl was taken: ip = slot + {f['length']} + {ip - f['slot'] - f['length']:#x} "
           "(its rel8), a target only relative to the slot") if taken else \
        f"the jl was not taken: ip = slot + {f['length']}, just past the copy"
    return (how[0].upper() + how[1:] + ".", None)


def _raw_call(lesson, f):
    raw = f["raw"]
    return (f"The call pushed {lesson.short(raw['top'])} (slot + {raw['top'] - f['slot']}) at "
            f"sp = {raw['sp']:#x}, marked * in STACK: returning there would run the slot's "
            "int3 padding. And ip is relative to the slot too, not at the callee.", None)


def _raw_ret(lesson, f):
    return (f"ret popped {lesson.short(f['raw']['ip'])}: an absolute address, already where "
            "the function returns to.", None)


def _raw_pushf(lesson, f):
    raw = f["raw"]
    return (f"pushf pushed flags {raw['top']:#x} ({_flags(raw['top'])}): the step's TF and "
            "IF leaked into the image the function will pop.", None)


def _raw_if(lesson, f):
    raw = f["raw"]
    now = raw["flags"] & X86_EFLAGS_IF
    what = "set IF to 1" if now else "left IF at 0 (the step runs with IF off anyway)"
    return (f"The flags are now {_flags(raw['flags'])}: the {f['text']} {what}, the state the "
            "function asked for.", None)


def _raw_indirect(lesson, f):
    raw = f["raw"]
    return (f"call *%rax jumped to the absolute target {lesson.short(raw['ip'])} and pushed "
            f"{lesson.short(raw['top'])} (slot + {raw['top'] - f['slot']}).", None)


def _fixed_relocate(lesson, f):
    ip = f["raw"]["ip"]
    return (f"ip = orig + (ip - slot) = {lesson.short(f['fixed']['ip'])}; nothing else "
            "needed a repair.", _panel("repaired (ip marked * in REGS)",
                                        [_reloc_line(lesson, f, ip)]))


def _fixed_riprel(lesson, f):
    return (f"ip is relocated like any instruction, to {lesson.short(f['fixed']['ip'])}; the "
            "operand was already right, repaired at copy time.",
            _panel("repaired (ip marked * in REGS)", [_reloc_line(lesson, f, f["raw"]["ip"])]))


def _fixed_jcc(lesson, f):
    where = "the branch target" if f["taken"] else "the next instruction"
    return (f"the same generic relocation puts ip at {lesson.short(f['fixed']['ip'])}, "
            f"{where} in the original function.",
            _panel("repaired (ip marked * in REGS)", [_reloc_line(lesson, f, f["raw"]["ip"])]))


def _fixed_call(lesson, f):
    raw, fixed = f["raw"], f["fixed"]
    return (f"the pushed return address becomes {lesson.short(fixed['top'])} (orig + "
            f"{f['length']}), and ip = {lesson.short(fixed['ip'])}, the callee.",
            _panel("repaired (stack slot and ip marked *)", [
                _ret_line(lesson, f, raw["top"], fixed["top"],
                          f"orig + (ret - slot) = {lesson.short(f['addr'])} + "
                          f"{raw['top'] - f['slot']}"),
                _reloc_line(lesson, f, raw["ip"])]))


def _fixed_ret(lesson, f):
    ip = f["raw"]["ip"]
    wrong = _relocated(f, ip)
    return (f"ip stays {lesson.short(f['fixed']['ip'])}; only TF is cleared.",
            _panel("not relocated", [
                f"  ip        {lesson.short(ip)} kept: it was popped, not computed from the "
                "slot",
                f"  relocated, it would be orig + (ip - slot) = {wrong:#x}, "
                + (lesson.short(wrong) if lesson.short(wrong) != f"{wrong:#x}" else
                   "in no function")]))


def _fixed_pushf(lesson, f):
    raw, fixed = f["raw"], f["fixed"]
    return (f"the pushed image becomes {fixed['top']:#x} ({_flags(fixed['top'])}), the "
            f"trapped TF and IF, and ip = {lesson.short(fixed['ip'])}.",
            _panel("repaired (stack slot marked *)", [
                f"  [sp]      {raw['top']:#x} ({_flags(raw['top'])}) -> "
                f"{fixed['top']:#x} ({_flags(fixed['top'])})   the trapped TF and IF",
                _reloc_line(lesson, f, raw["ip"])]))


def _fixed_if(lesson, f):
    before, raw, fixed = f["before"], f["raw"], f["fixed"]
    # Every other instruction gets the trapped IF OR-ed back (kprobe_saved_rflags).
    restored = raw["flags"] & ~X86_EFLAGS_TF | before["trapped_flags"] & X86_EFLAGS_IF
    f["without_rule"] = restored
    why = (f"OR-ing the trapped IF back, as for other instructions, would give {restored:#x} "
           f"({_flags(restored)}) and undo the {f['text']}") if restored != fixed["flags"] \
        else (f"OR-ing the trapped IF=0 back would change nothing: {restored:#x} "
              f"({_flags(restored)}); the rule matters for cli and popf")
    return (f"{f['text']} is an IF modifier, so its own IF survives: {_flags(fixed['flags'])}, "
            f"although the int3 trapped with {_flags(before['trapped_flags'])}.",
            _panel("IF kept", [
                f"  flags     {raw['flags']:#x} -> {fixed['flags']:#x} ({_flags(fixed['flags'])})",
                "  " + why, _reloc_line(lesson, f, raw["ip"])]))


def _fixed_indirect(lesson, f):
    raw, fixed = f["raw"], f["fixed"]
    return (f"the ModRM reg field is 2, an indirect call: ip stays "
            f"{lesson.short(fixed['ip'])} and the pushed return address becomes "
            f"{lesson.short(fixed['top'])}.",
            _panel("repaired (stack slot marked *; ip kept)", [
                _ret_line(lesson, f, raw["top"], fixed["top"]),
                f"  ip        {lesson.short(raw['ip'])} kept: the target is absolute"]))


def _fixed_2613(lesson, f):
    raw, fixed = f["raw"], f["fixed"]
    op = f["copy"][0]
    return (f"2.6.13 tested ({op:#x} & 0x30) == 0x10 on the opcode byte, never ModRM, so it "
            f"relocated the absolute target to {fixed['ip']:#x} and left the return address "
            f"{lesson.short(fixed['top'])}.",
            _panel("2.6.13's fix-up of call *%rax", [
                f"  ({op:#x} & 0x30) = {op & 0x30:#x}, not 0x10: not seen as an indirect call",
                _reloc_line(lesson, f, raw["ip"]) + "  (wild)",
                f"  [sp]      {lesson.short(raw['top'])} unrepaired",
                "  (reproduced with kpemu's arch switch ff_test_2613, off by default)"]))


def _result(lesson, f):
    return (f"{lesson.scene.fn} returned {f['result']:#x}; unprobed it returns "
            f"{f['unprobed']:#x}: the repaired step is invisible to the function. (m.call "
            "puts the caller's registers back, so REGS shows them as before the call.)",
            None)


def _result_2613(lesson, f):
    lost = f["lost"]
    code = lesson.m.read(f["fixed"]["ip"], 8)
    first = disassemble(code, f["fixed"]["ip"], 1)[0]
    old, new = lost["callee_byte"]
    if lost["ax"] == lesson.m.symbols.lookup_name("lt_callee") and old != new:
        harm = (f"rax still held lt_callee's address, so the wild run rewrote the callee's "
                f"first byte from {old:#04x} to {new:#04x}")
    else:
        harm = f"lt_callee's first byte is {new:#04x}"
    where = "in no function" if f["fixed"]["sym"] == f"{f['fixed']['ip']:#x}" else \
        f"in {f['fixed']['sym']}"
    return (f"The CPU went on at {f['fixed']['ip']:#x}, {where}, where the bytes "
            f"{first[2].hex(' ')} decode as {first[3]!r}; m.call gave up after "
            f"{LOST_LIMIT:,} instructions at {lesson.short(lost['ip'])}. {harm}; unprobed, "
            f"the call returns {f['unprobed']:#x}.",
            _panel("what became of it", [
                "  " + lost["message"],
                f"  lt_callee+0x0: {old:#04x} -> {new:#04x}, rax = {lost['ax']:#x}"]))


BEFORE = {"mov": _before_plain, "riprel": _before_riprel, "jcc_taken": _before_plain,
          "jcc_not_taken": _before_plain, "call": _before_call, "ret": _before_plain,
          "pushf": _before_flags, "cli": _before_flags, "sti": _before_flags,
          "call_indirect": _before_indirect, "call_indirect_2613": _before_indirect}
RAW = {"mov": _raw_plain, "riprel": _raw_plain, "jcc_taken": _raw_jcc,
       "jcc_not_taken": _raw_jcc, "call": _raw_call, "ret": _raw_ret, "pushf": _raw_pushf,
       "cli": _raw_if, "sti": _raw_if, "call_indirect": _raw_indirect,
       "call_indirect_2613": _raw_indirect}
FIXED = {"mov": _fixed_relocate, "riprel": _fixed_riprel, "jcc_taken": _fixed_jcc,
         "jcc_not_taken": _fixed_jcc, "call": _fixed_call, "ret": _fixed_ret,
         "pushf": _fixed_pushf, "cli": _fixed_if, "sti": _fixed_if,
         "call_indirect": _fixed_indirect, "call_indirect_2613": _fixed_2613}
RESULT = {s.key: _result for s in SCENES}
RESULT["call_indirect_2613"] = _result_2613



# -- claims ---------------------------------------------------------------------------------

def _scene(lesson, key):
    return lesson.facts["scenes"][key]


def _traps(lesson):
    c = lesson.final()["counters"]
    n = len(SCENES)
    got = {"int3": c["int3"], "debug": c["debug"]}
    return got == {"int3": n, "debug": n} and c["slot_insns"] == n, \
        f"{n} scenes: counted {got}, {c['slot_insns']} slot instructions"


def _clock(lesson):
    before, after = lesson.facts["clock"]
    return before == after == lesson.final()["clock"], \
        f"the guest clock read {before:,} before the scenes and {after:,} after"


def _three_states(lesson):
    phases = [s["phase"] for s in lesson.steps]
    want = ["before", "raw", "fixed", "result"] * len(SCENES)
    return phases == want, f"{len(phases)} steps in {len(SCENES)} scenes"


def _same_results(lesson):
    bad = [key for key, f in lesson.facts["scenes"].items()
           if key != "call_indirect_2613" and f["result"] != f["unprobed"]]
    return not bad, "differs: " + ", ".join(bad) if bad else \
        f"{len(SCENES) - 1} probed calls return their unprobed values"


def _mov(lesson):
    f = _scene(lesson, "mov")
    ok = f["raw"]["ip"] == f["slot"] + f["length"] and \
        f["fixed"]["ip"] == f["addr"] + f["length"] and f["resume"] == "RELOCATE"
    return ok, f"raw {f['raw']['ip']:#x} -> {f['fixed']['ip']:#x}"


def _riprel(lesson):
    f = _scene(lesson, "riprel")
    d, n = f["disp"], f["length"]
    ok = f["addr"] + n + d["old"] == f["slot"] + n + d["new"] == d["target"] == \
        lesson.facts["lt_value_addr"] and f["result"] == lesson.facts["lt_value"]
    return ok, (f"{f['addr']:#x} + {n} + {d['old']:#x} == {f['slot']:#x} + {n} + "
                f"{d['new']:#x} == {d['target']:#x}")


def _jcc(lesson):
    taken, not_taken = _scene(lesson, "jcc_taken"), _scene(lesson, "jcc_not_taken")
    rel = int.from_bytes(taken["copy"][1:2], "little", signed=True)
    n = taken["length"]
    ok = taken["raw"]["ip"] == taken["slot"] + n + rel and \
        taken["fixed"]["ip"] == taken["addr"] + n + rel and \
        not_taken["raw"]["ip"] == not_taken["slot"] + n and \
        not_taken["fixed"]["ip"] == not_taken["addr"] + n and \
        taken["resume"] == not_taken["resume"] == "RELOCATE"
    return ok, (f"taken -> {taken['fixed']['ip']:#x}, not taken -> "
                f"{not_taken['fixed']['ip']:#x}")


def _call(lesson):
    f = _scene(lesson, "call")
    ok = f["raw"]["top"] == f["slot"] + 5 and f["fixed"]["top"] == f["addr"] + 5 and \
        f["fixed"]["ip"] == lesson.facts["lt_callee"] == f["addr"] + (f["raw"]["ip"] - f["slot"])
    return ok, f"pushed {f['raw']['top']:#x} -> {f['fixed']['top']:#x}"


def _ret(lesson):
    f = _scene(lesson, "ret")
    ok = f["fixed"]["ip"] == f["raw"]["ip"] == f["before"]["top"] and f["resume"] == "RET"
    return ok, f"ip {f['raw']['ip']:#x} kept, the popped {f['before']['top']:#x}"


def _pushf(lesson):
    f = _scene(lesson, "pushf")
    tf_if = X86_EFLAGS_TF | X86_EFLAGS_IF
    ok = f["raw"]["top"] & tf_if == X86_EFLAGS_TF and \
        f["fixed"]["top"] & tf_if == f["before"]["trapped_flags"] & tf_if == X86_EFLAGS_IF
    return ok, f"pushed image {f['raw']['top']:#x} -> {f['fixed']['top']:#x}"


def _if_modifiers(lesson):
    cli, sti = _scene(lesson, "cli"), _scene(lesson, "sti")
    ok = cli["before"]["trapped_flags"] & X86_EFLAGS_IF and \
        not cli["fixed"]["flags"] & X86_EFLAGS_IF and cli["without_rule"] & X86_EFLAGS_IF and \
        not sti["before"]["trapped_flags"] & X86_EFLAGS_IF and \
        sti["fixed"]["flags"] & X86_EFLAGS_IF
    return bool(ok), (f"cli: {_flags(cli['before']['trapped_flags'])} -> "
                      f"{_flags(cli['fixed']['flags'])}; sti: "
                      f"{_flags(sti['before']['trapped_flags'])} -> "
                      f"{_flags(sti['fixed']['flags'])}")


def _indirect(lesson):
    fixed, bug = _scene(lesson, "call_indirect"), _scene(lesson, "call_indirect_2613")
    target = lesson.facts["lt_callee"]
    ok = fixed["resume"] == "CALL_ABS" and fixed["fixed"]["ip"] == fixed["raw"]["ip"] == target \
        and fixed["fixed"]["top"] == fixed["addr"] + fixed["length"] and \
        bug["resume"] == "RELOCATE" and bug["raw"]["ip"] == target and \
        bug["fixed"]["ip"] == bug["addr"] + (target - bug["slot"]) != target and \
        bug["fixed"]["top"] == bug["slot"] + bug["length"] and bug["result"] is None and \
        bug["fixed"]["sym"] == f"{bug['fixed']['ip']:#x}" and \
        bug["lost"]["callee_byte"][0] != bug["lost"]["callee_byte"][1]
    return ok, (f"fixed: ip {fixed['fixed']['ip']:#x}, pushed {fixed['fixed']['top']:#x}; "
                f"2.6.13: ip {bug['fixed']['ip']:#x} in no function, pushed "
                f"{bug['fixed']['top']:#x}, the call never returned and lt_callee's first byte "
                "went from {:#04x} to {:#04x}".format(*bug["lost"]["callee_byte"]))


DEMO = Demo(
    name="fixups",
    question="Why does the copy in the slot need repairs?",
    tier="C",
    confusions=(3,),
    record=record,
    claims=[
        Claim("traps == {int3: N, debug: N} and N slot instructions for the N scenes",
              _traps),
        Claim("each scene shows before the step, raw after it, after the fix-up, the result",
              _three_states),
        Claim("the guest clock did not move: m.call and the probes run off the clock",
              _clock),
        Claim("every probed call returns its unprobed value (but 2.6.13's call *%rax)",
              _same_results),
        Claim("mov: raw ip == slot + len, fixed ip == addr + len (generic relocation)", _mov),
        Claim("rip-relative: orig + len + old == slot + len + new == the data's address",
              _riprel),
        Claim("jcc taken and not taken: the generic relocation gives the target and the "
              "next instruction", _jcc),
        Claim("call rel32: the pushed slot + 5 becomes addr + 5; ip lands on the callee",
              _call),
        Claim("ret: ip is the popped address, not relocated", _ret),
        Claim("pushf: the image had TF=1 IF=0 and gets the trapped TF=0 IF=1 back", _pushf),
        Claim("cli and sti keep their own IF", _if_modifiers),
        Claim("call *%rax: fixed keeps ip and repairs the return address; 2.6.13 relocated "
              "ip to orig + (target - slot), in no function, and the wild run never returned "
              "and wrote into the callee", _indirect),
    ],
    prose=("Why run a copy somewhere else at all? The int3 stays in the text while the "
           "displaced instruction runs, so another CPU that reaches the probe meanwhile "
           "still traps; putting the original byte back to step it in place would open a "
           "window in which that CPU runs past the probe unseen. "
           "Each scene probes one instruction of kernel_images/lessons/lesson_targets.S and "
           "calls its function with m.call (which runs on a frozen guest clock: the clock "
           "in the headers snaps back after each call). Watch what running the copy at "
           "another address breaks, and what resume_execution() repairs."),
    after=("Anything that depends on where the instruction runs needs a repair: the ip "
           "after the step, a rip-relative operand (fixed at copy time), the return address "
           "a call pushes, the flags image pushf saves, IF for the instructions that set it. "
           "ret and indirect jumps and calls leave ip absolute; 2.6.13 missed the last ones."),
)
