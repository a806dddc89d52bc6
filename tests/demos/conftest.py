"""Each demo is recorded once per test process and shared, and each of its frames rendered
once: recording and rendering are the slow parts, and the tests only read them.  A test
that alters a lesson alters a copy."""

import functools

import pytest

from kprobes.demos.catalogue import run
from kprobes.demos.render import render_frame


@functools.lru_cache(maxsize=None)
def recorded(name):
    return run(name)


@functools.lru_cache(maxsize=None)
def frames(name):
    """The --no-color frame of every step of demo `name`, by step number."""
    return {step["i"]: render_frame(step) for step in recorded(name).steps}


@pytest.fixture
def lesson_of():
    return recorded


@pytest.fixture
def frames_of():
    return frames
