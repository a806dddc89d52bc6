"""Seeds of the probe-definition and events-file targets: the real definitions the events
tests use, read from their sources (so new tests bring new seeds)."""

import ast
import functools
import re
from pathlib import Path

EVENTS_TESTS = Path(__file__).resolve().parent.parent / "events"

# A kprobe_events command: `p`/`r` (with maxactive, event) and a probe point, or `-:EVENT`.
_DEFINITION = re.compile(r"^(?:[pr]\d*(?::\S*)?\s+\S|-:\S)")

# The events tests run against a small fake kallsyms (tests/events/conftest.py); these are
# its functions' counterparts in the toykernel, so the seeds resolve on a real machine.
_TOYKERNEL_NAMES = {"vfs_read": "sys_mkdir", "kernel_clone": "do_fork", "kfree": "fib",
                    "dup_sym": "sys_getpid"}


@functools.lru_cache(maxsize=None)
def probe_definitions():
    """Every string constant line of tests/events/*.py that reads as a command, with the
    caret markers of the syntax-error tables removed, sorted."""
    found = set()
    for source in sorted(EVENTS_TESTS.glob("*.py")):
        for node in ast.walk(ast.parse(source.read_text())):
            if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
                continue
            for line in node.value.split("\n"):
                if _DEFINITION.match(line):
                    line = line.replace("^", "")
                    for fake, real in _TOYKERNEL_NAMES.items():
                        line = line.replace(fake, real)
                    found.add(line)
    return sorted(found)
