"""The demo catalogue: every module of kprobes.demos.lessons that defines DEMO, in the
order of teaching-demos.md §4.2 (tier C first), and run(name), which records one.

Must not import: unicorn.
"""

import importlib
import pkgutil

from kprobes.demos import lessons
from kprobes.demos.lesson import Lesson, LessonError

# The catalogue order of teaching-demos.md §4.2: tier C first.
CORE = ("int3", "kprobe", "fixups", "kretprobe", "designs", "recursion", "maxactive",
        "stacktrace")
SECOND = ("redirect", "aggregate", "reentry", "multi-kretprobe", "tail-call",
          "unregister-inflight", "task-exit", "exec-bug", "entry-data", "observer")
# The five learner confusions (teaching-demos.md §5), by number.
CONFUSIONS = {
    1: "The pre_handler's ip is one past my probe address.",
    2: "The post_handler runs after the function returns.",
    3: "Why step a copy somewhere else, and why does that need fix-ups?",
    4: "Why does kretprobe_trampoline show up in my stack trace, or as func?",
    5: "Why are return events missing, sometimes with nmissed = 0?",
}


def _discover():
    found = {}
    for info in pkgutil.iter_modules(lessons.__path__):
        module = importlib.import_module(f"{lessons.__name__}.{info.name}")
        demo = getattr(module, "DEMO", None)
        if demo is not None:
            if demo.name in found:
                raise LessonError(f"two demos are named {demo.name!r}")
            found[demo.name] = demo
    order = [n for n in CORE + SECOND if n in found]
    order += sorted(n for n in found if n not in order)
    return {n: found[n] for n in order}


DEMOS = _discover()


def run(name):
    """Record demo `name` and check its claims (a Lesson; failed claims are in it)."""
    demo = DEMOS.get(name)
    if demo is None:
        raise LessonError(f"no demo named {name!r} (kpemu demo lists them)")
    steps, facts = demo.record()
    return Lesson(demo, steps, facts)
