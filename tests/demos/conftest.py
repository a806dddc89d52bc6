"""Each demo is recorded once per test process and shared: recording is the slow part, and
a Lesson is only read by the tests."""

import functools

import pytest

from kprobes.demos.catalogue import run


@functools.lru_cache(maxsize=None)
def recorded(name):
    return run(name)


@pytest.fixture
def lesson_of():
    return recorded
