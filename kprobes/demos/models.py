"""Host models of the guest functions lessons run, to check the trace against numbers
worked out apart from the machine: the call tree of the toy kernel's fib(n) (workload.c,
plain double recursion; fib(n) for n < 2 returns n without a call).

Must not import: unicorn, emu.
"""

from collections import Counter


def fib(n):
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


def fib_calls_by_depth(n, depth=1, counts=None):
    """Counter depth -> how many calls of fib the call fib(n) makes at that depth (the
    outermost call is depth 1)."""
    counts = Counter() if counts is None else counts
    counts[depth] += 1
    if n >= 2:
        fib_calls_by_depth(n - 1, depth + 1, counts)
        fib_calls_by_depth(n - 2, depth + 1, counts)
    return counts


def fib_calls(n):
    """Every call fib(n) makes, itself included."""
    return sum(fib_calls_by_depth(n).values())


def fib_depth(n):
    """Frames on the deepest chain: fib(n) -> fib(n-1) -> ... -> fib(1)."""
    return max(fib_calls_by_depth(n))
