"""A kprobe event's hit recorded by trap.c's C path (an EventProbe as the kprobe's
pre_handler): the same records, in the same order, as the Python reference records them;
what the C path cannot read or express goes to the Python handler, before anything
changed.  Every test here runs on both trap paths (conftest's trap_path)."""

import pytest

from kprobes.events import TraceRecord

NATIVE = ("p:nat fib+0x4 n=%di:s32 ret=+8(%sp):symbol ip=%ip bits=%di:b2@1/8 up=$stack1:x64 "
          "imm=\\-2:s8 ax=%ax:x8 orig=%orig_ax:s64 j=@jiffies:u32 cs=%cs:x16 ss=%ss fl=%flags:x32 "
          "r15=%r15")
# fib(3): the C-recorded `nat` hits interleaved with the Python ones of a return event and
# of an event whose first argument faults (the C path hands that hit to Python).
AT = "            init-1       [000] d....     0.0000"    # comm-pid [cpu] flags, the clock
FIB3 = [
    AT + '12: nat: (fib+0x4/0x30) n=3 ret=kretprobe_trampoline+0x0/0xf '
         'ip=0xffffffff81001b35 bits=1 up=0xffffffff810000a1 imm=-2 ax=0x3 orig=-1 j=0 '
         'cs=0x8 ss=0x10 fl=0x83 r15=0x0',
    AT + '12: flt: (fib+0x7/0x30) bad=(fault) ok=0',
    AT + '12: nat: (fib+0x4/0x30) n=2 ret=kretprobe_trampoline+0x0/0xf '
         'ip=0xffffffff81001b35 bits=1 up=0xffffffff810000a1 imm=-2 ax=0x2 orig=-1 j=0 '
         'cs=0x8 ss=0x10 fl=0x2 r15=0x0',
    AT + '12: flt: (fib+0x7/0x30) bad=(fault) ok=3',
    AT + '12: nat: (fib+0x4/0x30) n=1 ret=kretprobe_trampoline+0x0/0xf '
         'ip=0xffffffff81001b35 bits=0 up=0xffffffff810000a1 imm=-2 ax=0x1 orig=-1 j=0 '
         'cs=0x8 ss=0x10 fl=0x2 r15=0x0',
    AT + '12: flt: (fib+0x7/0x30) bad=(fault) ok=2',
    AT + '12: back: (fib+0x19/0x30 <- fib) rv=1',
    AT + '12: nat: (fib+0x4/0x30) n=0 ret=kretprobe_trampoline+0x0/0xf '
         'ip=0xffffffff81001b35 bits=0 up=0xffffffff810000a1 imm=-2 ax=0x0 orig=-1 j=0 '
         'cs=0x8 ss=0x10 fl=0x46 r15=0x0',
    AT + '12: flt: (fib+0x7/0x30) bad=(fault) ok=2',
    AT + '12: back: (fib+0x24/0x30 <- fib) rv=0',
    AT + '12: back: (fib+0x19/0x30 <- fib) rv=1',
    AT + '12: nat: (fib+0x4/0x30) n=1 ret=kretprobe_trampoline+0x0/0xf '
         'ip=0xffffffff81001b35 bits=0 up=0xffffffff810000a1 imm=-2 ax=0x1 orig=-1 j=0 '
         'cs=0x8 ss=0x10 fl=0x2 r15=0x0',
    AT + '12: flt: (fib+0x7/0x30) bad=(fault) ok=3',
    AT + '13: back: (fib+0x24/0x30 <- fib) rv=1',
    AT + '13: back: (__module_area_start+0x0/0x1000000 <- fib) rv=2',
]


def _stored(events):
    """What the buffer's pages hold, by kind: R a RawRecord (C), T a TraceRecord (Python)."""
    return "".join("T" if isinstance(r, TraceRecord) else "R"
                   for page in events.buffer.pages for r in page)


def test_a_hit_is_recorded_natively_and_reads_as_the_reference_records_it(ev, trap_path):
    m, k, events = ev
    events.write(NATIVE)
    events.write("r:back fib%return rv=$retval:s64")
    events.write("p:flt fib+0x7 bad=@0xdead000000000000:u64 ok=%bx:u16")
    events.enable()
    assert m.call("fib", 3) == 2
    assert events.trace_lines() == FIB3
    nat = events.events["kprobes/nat"]
    assert nat.nhit == 5 and events.events["kprobes/flt"].nhit == 5
    assert type(nat.probes[0].recorder).__name__ == "EventProbe"
    assert events.events["kprobes/back"].probes[0].recorder is None     # a return probe
    if trap_path == "c-path":
        assert _stored(events) == "RTRTRTTRTTTRTTT"
    else:
        assert _stored(events) == "T" * 15
    # JSON reads the same values from either kind of record
    assert events.buffer.read is not None
    assert next(iter(events.buffer)).as_json()["args"] == {
        "n": 3, "ret": "kretprobe_trampoline+0x0/0xf", "ip": 0xffffffff81001b35, "bits": 1,
        "up": 0xffffffff810000a1, "imm": -2, "ax": 3, "orig": -1, "j": 0, "cs": 8,
        "ss": 0x10, "fl": 0x83, "r15": 0}


def test_a_listener_gets_every_record_as_it_is_written(ev, trap_path):
    """trace_pipe takes TraceRecords as they come: with a listener the C path hands the
    hit to the Python handler."""
    m, _k, events = ev
    events.write(NATIVE)
    events.enable()
    seen = []
    events.listeners.append(seen.append)
    assert m.call("fib", 3) == 2
    assert [r.text() for r in seen] == events.trace_lines() and len(seen) == 5
    assert seen[0].text() == (AT + "12: nat: (fib+0x4/0x30) n=3 "
                              "ret=__module_area_start+0x0/0x1000000 ip=0xffffffff81001b35 "
                              "bits=1 up=0xffffffff81200000 imm=-2 ax=0x3 orig=-1 j=0 cs=0x8 "
                              "ss=0x10 fl=0x83 r15=0x0")
    assert _stored(events) == "TTTTT"


@pytest.mark.parametrize("args", ["s=+0(%di):string", "c=$comm", "a=+0(%sp):u64[2]",
                                  "u=+0(%di):ustring", "y=%di:symstr"])
def test_arguments_the_c_path_cannot_express_keep_the_python_handler(ev, args):
    m, k, events = ev
    events.write(f"p:slow fib {args}")
    tp = events.events["kprobes/slow"].probes[0]
    assert tp.recorder is None and tp.kprobe.pre_handler == tp._hit
    events.enable()
    m.call("fib", 2)
    assert tp.event.nhit == 3 and _stored(events) == "TTT"


def test_a_disabled_event_records_nothing_and_counts_nothing(ev):
    m, _k, events = ev
    events.write(NATIVE)
    events.enable()
    m.call("fib", 2)
    events.disable()
    m.call("fib", 2)
    assert events.events["kprobes/nat"].nhit == 3 and events.buffer.written == 3


def test_entry_arguments_stack_words_and_user_reads(ev, trap_path):
    """$argN past the six argument registers is a stack word, $stack the stack pointer; a
    user read (+u) below TASK_SIZE_MAX is read natively, one of a kernel address faults
    (the C path hands that hit to Python, which says so)."""
    m, _k, events = ev
    events.write("p:ent fib a1=$arg1:s32 a7=$arg7 top=$stack usr=+u0(%di):u8")
    events.write("p:kusr fib+0x4 k=+u0(%sp):u8")
    events.enable()
    assert m.call("fib", 2) == 1
    head = AT + "12: "
    assert events.trace_lines() == [
        head + "ent: (fib+0x0/0x30) a1=2 a7=0x0 top=0xffffffff81011ec8 usr=0",
        head + "kusr: (fib+0x4/0x30) k=(fault)",
        head + "ent: (fib+0x0/0x30) a1=1 a7=0x0 top=0xffffffff81011ea8 usr=0",
        head + "kusr: (fib+0x4/0x30) k=(fault)",
        head + "ent: (fib+0x0/0x30) a1=0 a7=0x0 top=0xffffffff81011ea8 usr=0",
        head + "kusr: (fib+0x4/0x30) k=(fault)"]
    assert _stored(events) == ("RTRTRT" if trap_path == "c-path" else "TTTTTT")
