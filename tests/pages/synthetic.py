"""A synthetic two-design lesson: what the `designs` demo records (the same probed return
under design (a) and design (b), phases aligned by name), made from a real recorded
lesson's steps so every panel holds real machine state.  The page tests use it where the
catalogue has no two-design demo yet, and always for the exact lockstep rows it must give.

Design (a) has every phase of teaching-demos.md §4.2's `designs` row; design (b) lacks
R.db and R.post (its trampoline handler sets ip itself: no single-step on return).
"""

import copy

PHASES_A = ("E.int3", "E.pre/swap", "E.db", "body", "R.ret", "R.int3", "R.handler", "R.db",
            "R.post", "resume")
PHASES_B = tuple(p for p in PHASES_A if p not in ("R.db", "R.post"))
TRAPS = {"E.int3": 3, "E.db": 1, "R.int3": 3, "R.db": 1}
NAME = "synthetic-designs"


def _template(steps, vector):
    """A real step to copy: a trap step of `vector`, or a step that is not a trap."""
    for s in steps:
        if (vector is None and s["trap_no"] is None) or \
                (vector is not None and s["vector"] == vector and s["trap_no"] is not None):
            return s
    raise LookupError(f"the source lesson has no step for vector {vector}")


def two_design_lesson(source_steps):
    """(head, steps) of the synthetic lesson, in lesson-trace form."""
    steps = []
    intro = copy.deepcopy(_template(source_steps, None))
    intro.update(design=None, phase="intro", title="two designs", event="note",
                 narration="The same probed return, recorded under design (a) and (b).")
    steps.append(intro)
    for design, phases in (("stack", PHASES_A), ("task", PHASES_B)):
        trap_no = 0
        for phase in phases:
            vector = TRAPS.get(phase)
            s = copy.deepcopy(_template(source_steps, vector))
            if vector is not None:
                trap_no += 1
            s.update(design=design, phase=phase, title=f"{phase} in design {design}",
                     narration=f"The {phase} phase of design {design}.",
                     vector=vector, trap_no=trap_no if vector is not None else None,
                     event="kprobes.trap" if vector is not None else "note")
            steps.append(s)
    for n, s in enumerate(steps, 1):
        s["i"] = n
        s["n"] = len(steps)
    head = {"lesson": NAME, "question": "Design (a) against design (b), phase by phase?",
            "semantics": "x86_64, Linux 2.6.13 semantics, kretprobe design (b), instances "
                         "keyed by task vs kretprobe design (a), instances keyed by stack "
                         "address",
            "steps": len(steps), "claims": [], "facts": {}}
    return head, steps
