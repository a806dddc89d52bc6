"""What the page and slide tests share: every catalogue demo's lesson trace, recorded once
a session and read back from its JSON Lines (what every renderer's input is), and the
synthetic two-design lesson (tests/pages/synthetic.py).

LESSONS names them all, so a demo added to the catalogue is covered with no edit here.
"""

import json
from dataclasses import dataclass

import pytest

from kprobes.demos.catalogue import DEMOS, run
from kprobes.demos.page import read_trace
from tests.pages import synthetic

DEMO_NAMES = list(DEMOS)
LESSONS = DEMO_NAMES + [synthetic.NAME]


@dataclass
class Trace:
    name: str
    head: dict
    steps: list
    jsonl: str
    prose: str = ""
    after: str = ""


def _jsonl(head, steps):
    return "\n".join(json.dumps(x, sort_keys=True) for x in [head, *steps]) + "\n"


@pytest.fixture(scope="session")
def trace():
    """trace(name) -> Trace: the lesson recorded (once a session), as its trace reads back."""
    cache = {}

    def get(name):
        if name not in cache:
            if name == synthetic.NAME:
                head, steps = synthetic.two_design_lesson(get("kprobe").steps)
                text = _jsonl(head, steps)
                cache[name] = Trace(name, *read_trace(text), text)
            else:
                lesson = run(name)
                text = lesson.to_json_lines()
                cache[name] = Trace(name, *read_trace(text), text, lesson.demo.prose,
                                    lesson.demo.after)
        return cache[name]

    return get
