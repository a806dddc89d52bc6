"""int3: what the CPU does at a breakpoint -- a bare 0xcc written over the first byte of
sys_getpid while the workload runs, with no kprobes installed at all.

No Kprobes on the machine, on purpose: the lesson is what the CPU and the kernel's own IDT
do with an int3 before any kprobes exists.  With kprobes installed but not probing the
address, kprobe_handler() would look the address up, find no probe and pass the trap on
(a "foreign" int3), and everything after would be the same; without it nothing stands
between the CPU and the guest's gate.

The probe address is sys_getpid+0, a 9-byte `mov rax, gs:[0]`, so that resuming at
ip = address + 1 (the saved RIP, which the guest's do_int3 never moves back) lands inside
the instruction and the CPU decodes the bytes after the int3 as another instruction.
"""

import struct

from emu import Machine
from emu.cpu import X86_EFLAGS_IF
from kprobes.demos import scenes
from kprobes.demos.lesson import Claim, Demo, Recorder, disassemble

TARGET = "sys_getpid"
INT3 = 0xCC
INT3_VECTOR = 3
IDT_ENTRY_SIZE = 16
GATE_TYPES = {0xE: "64-bit interrupt gate", 0xF: "64-bit trap gate"}
# The exception frame the CPU pushes, lowest address first (the CPU pushes SS first).
FRAME = ("RIP", "CS", "RFLAGS", "RSP", "SS")


def read_idt_gate(m, vector):
    """The IDT entry for `vector` as the CPU reads it: idt_descr (what head.S's lidt
    loaded: limit, base) gives the table, the entry is 16 bytes at base + 16 * vector."""
    descr = m.symbols.lookup_name("idt_descr")
    limit, base = struct.unpack("<HQ", m.read(descr, 10))
    raw = m.read(base + IDT_ENTRY_SIZE * vector, IDT_ENTRY_SIZE)
    off_low, selector, ist, attr, off_mid, off_high, _zero = struct.unpack("<HHBBHII", raw)
    return {"idt_base": base, "idt_limit": limit, "raw": raw,
            "entry": base + IDT_ENTRY_SIZE * vector, "selector": selector,
            "ist": ist & 7, "type": attr & 0xF, "dpl": (attr >> 5) & 3,
            "present": attr >> 7, "offset": off_low | off_mid << 16 | off_high << 32}


class Int3Lesson:
    """The narrators of the guest's trap and gate entry, and what they saw."""

    def __init__(self, m, rec, addr):
        self.m = m
        self.rec = rec
        self.addr = addr
        self.seen = {}
        self.before = None          # registers as the int3 trapped
        rec.narrators["trap"] = self.tell_trap
        rec.narrators["delivered"] = self.tell_delivered

    def tell_trap(self, rec, ev):
        if "trap_ip" in self.seen or ev.vector != INT3_VECTOR:
            return None
        eng = self.m.engine
        self.before = {n: eng.reg(n) for n in ("sp", "flags", "cs", "ss")}
        self.seen["trap_ip"] = ev.ip
        rec.step("int3 is a trap",
                 f"The CPU executed the int3 at {rec.short(self.addr)} and took vector 3. "
                 f"int3 is a trap, not a fault: the ip it saves is {ev.ip:#x}, already "
                 f"past the 1-byte instruction ({ev.ip:#x} = {self.addr:#x} + 1).",
                 phase="int3", event="trap", vector=INT3_VECTOR, at=self.addr,
                 facts={"addr": self.addr, "trap_ip": ev.ip, "vector": ev.vector})
        gate = read_idt_gate(self.m, INT3_VECTOR)
        self.seen["gate"] = gate
        handler = rec.short(gate["offset"])
        rec.step("the IDT gate",
                 f"The CPU reads entry 3 of the IDT (base {gate['idt_base']:#x}, entry at "
                 f"{gate['entry']:#x}): a {GATE_TYPES.get(gate['type'], 'gate')} (type "
                 f"{gate['type']:#x}), DPL {gate['dpl']}, present, selector "
                 f"{gate['selector']:#x}, handler {handler}. An interrupt gate clears IF "
                 "on entry; a trap gate would not.",
                 phase="gate", facts={k: v for k, v in gate.items() if k != "raw"},
                 extra={"title": "IDT entry 3, read from guest memory", "lines":
                        _gate_lines(gate, handler)})
        return None

    def tell_delivered(self, rec, ev):
        if "frame_sp" in self.seen or ev.vector != INT3_VECTOR:
            return None
        frame = [self.m.read_u64(ev.sp + 8 * n) for n in range(len(FRAME))]
        values = dict(zip(FRAME, frame))
        self.seen.update(frame_sp=ev.sp, frame=values, entry_ip=ev.ip, entry_flags=ev.flags)
        for n, name in enumerate(FRAME):
            rec.stack_labels[ev.sp + 8 * n] = name
        saved_if = int(bool(values["RFLAGS"] & X86_EFLAGS_IF))
        now_if = int(bool(ev.flags & X86_EFLAGS_IF))
        rec.step("exception frame",
                 f"The CPU pushed SS, RSP, RFLAGS, CS and RIP (five words at sp = "
                 f"{ev.sp:#x}) and jumped to {rec.short(ev.ip)}. The saved RIP is "
                 f"{values['RIP']:#x} and the saved RFLAGS has IF={saved_if}; the "
                 f"interrupt gate left IF={now_if} in the handler.",
                 phase="frame", facts={"sp": ev.sp, "frame": values, "ip": ev.ip,
                                       "saved_IF": saved_if, "IF": now_if},
                 extra={"title": "the exception frame (offsets from the new sp)",
                        "lines": self.frame_lines(ev.sp, values)})
        return None

    def frame_lines(self, sp, values):
        before = self.before
        rows = [f"  sp+{8 * n:#04x}  {name:<6} {values[name]:016x}  "
                for n, name in enumerate(FRAME)]
        rows[0] += f"{self.rec.short(values['RIP'])}: the int3's address + 1"
        rows[1] += f"the code segment (cs was {before['cs']:#x})"
        rows[2] += f"the flags before the trap (IF={int(bool(values['RFLAGS'] & X86_EFLAGS_IF))})"
        rows[3] += f"the interrupted stack pointer (sp was {before['sp']:#x})"
        rows[4] += f"the stack segment (ss was {before['ss']:#x})"
        rows.append(f"  the CPU aligned the stack first: ({before['sp']:#x} & ~0xf) - "
                    f"{len(FRAME)} * 8 = {sp:#x}")
        return rows


def _gate_lines(gate, handler):
    raw = gate["raw"]
    return [f"  bytes   {raw.hex(' ')}",
            f"  offset  {gate['offset']:016x} = {handler} (bits 0-15, 16-31, 32-63)",
            f"  segment {gate['selector']:#06x}   ist {gate['ist']}   "
            f"type {gate['type']:#x} ({GATE_TYPES.get(gate['type'], '?')})   "
            f"dpl {gate['dpl']}   present {gate['present']}",
            f"  dpl {gate['dpl']}: "
            + ("user mode may raise it too" if gate["dpl"] == 3 else
               f"only privilege levels <= {gate['dpl']} may raise it")
            + f"; ist {gate['ist']}: " + ("on the current stack" if gate["ist"] == 0 else
                                          f"on IST stack {gate['ist']}")]


def _decodings(m, addr):
    """The instructions as written at addr and as the CPU decodes them from addr + 1."""
    sym = m.symbols.symbol_at(addr)
    end = sym.addr + sym.size
    original = m.text_byte(addr).to_bytes(1, "little") + m.read(addr + 1, end - addr - 1)
    written = disassemble(original, addr)
    misread = disassemble(original[1:], addr + 1)
    return written, misread


def _listing(m, rows):
    return [f"    {m.symbols.format(a):<18} {code.hex(' '):<27} {text}"
            for a, _n, code, text in rows]


def record():
    unprobed = scenes.unprobed_final()
    m = Machine()
    m.boot()
    fn = m.symbols.get(TARGET)
    addr = fn.addr
    original = m.read(addr, 1)[0]

    def overwritten_byte(a):
        return original if a == addr and m.read(addr, 1)[0] == INT3 else None

    # Like any layer that writes a breakpoint: the program's own byte stays readable.
    m.text_originals.append(overwritten_byte)
    rec = Recorder(m)
    rec.watch(TARGET)
    rec.guest_vectors = {INT3_VECTOR}
    lesson = Int3Lesson(m, rec, addr)
    written, misread = _decodings(m, addr)
    first = written[0]

    with rec:
        rec.step("the byte at the address",
                 f"{TARGET} starts at {addr:#x} with a {first[1]}-byte instruction, "
                 f"{first[2].hex(' ')} ({first[3]}). No kprobes is installed: the CPU and "
                 "the guest's own IDT do everything in this lesson.", phase="before",
                 facts={"addr": addr, "byte": original, "length": first[1]})
        m.text_poke(addr, bytes((INT3,)))
        now = m.read(addr, 1)[0]
        rec.step("write 0xcc",
                 f"The lesson writes {now:02x} (int3) over the first byte, {original:02x}, "
                 f"with m.text_poke. The other {first[1] - 1} bytes of the instruction are "
                 "still there, behind the breakpoint.", phase="poke",
                 facts={"addr": addr, "old": original, "new": now})
        scenes.run_until_event(m, lambda ev: ev.kind == "delivered" and
                               ev.vector == INT3_VECTOR)
        resume_at = lesson.seen["frame"]["RIP"]
        console_before, clock_before = len(m.console), m.clock.executed
        scenes.step_until(m, lambda ip: ip == resume_at)
        printed = m.console[console_before:]
        rec.step("iretq to the saved RIP",
                 f"The guest's handler ran ({m.clock.executed - clock_before:,} instructions): "
                 f"do_int3 printed {printed.strip()!r}, and iretq popped the frame, so ip = "
                 f"{resume_at:#x} and IF={rec_flag(m)} again. Nothing moved ip back to "
                 f"{addr:#x}: the CPU goes on one byte into the {first[1]}-byte instruction.",
                 phase="resume", covers_run=True,
                 facts={"printed": printed, "ip": m.engine.reg("ip")},
                 extra={"title": "the same bytes, two decodings", "lines":
                        ["  as written, from the int3's address:"] + _listing(m, written)
                        + [f"  as the CPU now reads them, from {addr + 1:#x}:"]
                        + _listing(m, misread)})
        row = next(r for r in misread if r[0] == m.engine.reg("ip"))
        scenes.step_until(m, lambda ip: ip != row[0])
        ax = m.engine.reg("ax")
        rec.step("the mis-decoded instruction",
                 f"The CPU ran {row[2].hex(' ')} as {row[3]!r}: without its gs: prefix "
                 f"(the byte under the int3) it read the 8 bytes at address "
                 f"{_absolute(row[3])}, not current from the per-CPU area, so rax = "
                 f"{ax:#x} is no task_struct.", phase="misdecoded", covers_run=True,
                 facts={"ip": row[0], "bytes": row[2], "text": row[3], "ax": ax})
        scenes.step_out(m, fn)
        returned = m.engine.reg("ax")
        pid, comm = m.current.pid, m.current.comm
        rec.step("a wrong answer",
                 f"{TARGET} went on with that rax: it read a 'pid' at rax + 8 = "
                 f"{ax + 8:#x} and returned {returned} to {rec.short(m.engine.reg('ip'))}, "
                 f"but the caller, {rec.task_name()}, has pid {pid}. No crash: one byte of "
                 "bad resume became a silently wrong result.", phase="return",
                 covers_run=True, facts={"ax": returned, "pid": pid})
        m.text_poke(addr, bytes((original,)))
        rec.step("the byte put back",
                 f"The lesson writes {original:02x} back at {addr:#x}, so the next getpid "
                 "runs the real instruction, and lets the workload finish.",
                 phase="restore", facts={"addr": addr, "byte": m.read(addr, 1)[0]})
    m.text_originals.remove(overwritten_byte)
    probed = scenes.final_state(m)
    facts = {"addr": addr, "original": original, "length": first[1],
             "written": first[3], "misread": misread[0][3], "misread_len": misread[0][1],
             "gate": {k: v for k, v in lesson.seen["gate"].items() if k != "raw"},
             "int3_symbol": m.symbols.lookup_name("int3"),
             "before": lesson.before, "frame": lesson.seen["frame"],
             "entry_flags": lesson.seen["entry_flags"], "entry_ip": lesson.seen["entry_ip"],
             "printed": printed, "returned": returned, "pid": pid,
             "console_line": _task_line(probed["console"], comm),
             "unprobed_line": _task_line(unprobed["console"], comm)}
    return rec.finish(), facts


def rec_flag(m):
    return int(bool(m.engine.reg("flags") & X86_EFLAGS_IF))


def _absolute(text):
    return text[text.index("[") + 1:text.index("]")]


def _task_line(console, comm):
    return next((line for line in console.splitlines() if line.startswith(comm + "[")), "")


# -- claims ---------------------------------------------------------------------------------

def _traps(lesson):
    c = lesson.final()["counters"]
    got = {"int3": c["int3"], "debug": c["debug"]}
    return got == {"int3": 1, "debug": 0} and lesson.traps() == 1, f"counted {got}"


def _trap_ip(lesson):
    f = lesson.facts
    step = lesson.first(phase="int3")
    ok = step["facts"]["trap_ip"] == f["frame"]["RIP"] == f["addr"] + 1
    return ok, f"saved RIP {f['frame']['RIP']:#x}, int3 at {f['addr']:#x}"


def _gate(lesson):
    g = lesson.facts["gate"]
    ok = (g["type"], g["present"], g["dpl"], g["ist"]) == (0xE, 1, 3, 0) and \
        g["offset"] == lesson.facts["int3_symbol"] == lesson.facts["entry_ip"]
    return ok, (f"type {g['type']:#x}, present {g['present']}, dpl {g['dpl']}, handler "
                f"{g['offset']:#x}, entered at {lesson.facts['entry_ip']:#x}")


def _frame(lesson):
    f = lesson.facts
    b, fr = f["before"], f["frame"]
    want = {"RIP": f["addr"] + 1, "CS": b["cs"], "RFLAGS": b["flags"], "RSP": b["sp"],
            "SS": b["ss"]}
    sp = lesson.first(phase="frame")["facts"]["sp"]
    return fr == want and sp == (b["sp"] & ~0xF) - 8 * len(FRAME), \
        "frame " + ", ".join(f"{k}={v:#x}" for k, v in fr.items())


def _if_cleared(lesson):
    f = lesson.facts
    saved = bool(f["frame"]["RFLAGS"] & X86_EFLAGS_IF)
    entry = bool(f["entry_flags"] & X86_EFLAGS_IF)
    return saved and not entry, f"IF saved {int(saved)}, in the handler {int(entry)}"


def _misdecoded(lesson):
    f = lesson.facts
    step = lesson.first(phase="misdecoded")["facts"]
    ok = step["ip"] == f["addr"] + 1 and step["text"] == f["misread"] != f["written"] and \
        f["misread_len"] == f["length"] - 1
    return ok, (f"ran {step['text']!r} ({f['misread_len']} bytes) at {step['ip']:#x}, "
                f"not {f['written']!r} ({f['length']} bytes)")


def _printed(lesson):
    f = lesson.facts
    want = f"int3 at {f['addr'] + 1:x}\n"
    return f["printed"] == want, f"console {f['printed']!r}"


def _wrong_answer(lesson):
    f = lesson.facts
    ok = f["returned"] != f["pid"] and f["console_line"] != f["unprobed_line"] != ""
    return ok, (f"getpid returned {f['returned']}, pid {f['pid']}; "
                f"{f['console_line']!r} vs unprobed {f['unprobed_line']!r}")


DEMO = Demo(
    name="int3",
    question="What does the CPU do at a breakpoint?",
    tier="C",
    confusions=(1,),
    record=record,
    claims=[
        Claim("traps == {int3: 1, debug: 0}: one breakpoint, through the guest's IDT",
              _traps),
        Claim("int3 is a trap: the saved RIP == the int3's address + 1", _trap_ip),
        Claim("IDT gate 3 is a present 64-bit interrupt gate, DPL 3, no IST, whose handler "
              "the CPU entered", _gate),
        Claim("the frame is RIP, CS, RFLAGS, RSP, SS of the interrupted code, 16-byte "
              "aligned", _frame),
        Claim("the interrupt gate cleared IF (saved IF=1, handler IF=0)", _if_cleared),
        Claim("resuming at RIP ran another instruction, decoded from one byte in", _misdecoded),
        Claim("the guest's do_int3 printed the trap's RIP", _printed),
        Claim("the result is wrong: getpid's value is not the pid, and the console shows it",
              _wrong_answer),
    ],
    prose=("A bare int3 (0xcc) written by hand over the first byte of sys_getpid, with no "
           "kprobes installed: what the CPU saves, which IDT gate it takes, the frame it "
           "pushes, and what happens when the kernel simply returns to the saved RIP."),
    after=("The saved RIP is one past the breakpoint because int3 is a trap; that is why "
           "kprobes computes the probe address as ip - 1, why a pre_handler sees "
           "ip == addr + 1, and why something must put ip back (or step the instruction "
           "elsewhere) before the CPU goes on -- see kpemu demo kprobe."),
)
