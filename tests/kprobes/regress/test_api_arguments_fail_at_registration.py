"""Regression: wrong argument types reached the API's insides -- pre_handler=5 was
accepted and failed inside the trap at the first hit, Kretprobe(maxactive=10**9) allocated
until the host ran out of memory, a second Kprobes(m) failed deep in the arch layer.  Each
is now a KprobeError (with Linux's errno; ENOMEM for a pool kpemu will not allocate) or a
KprobesError at the call."""

import errno

import pytest

from emu import Machine
from kprobes import (KRETPROBE_MAXACTIVE_MAX, Kprobe, KprobeError, Kprobes, KprobesError,
                     Kretprobe)


@pytest.mark.parametrize("kwargs, message", [
    (dict(symbol_name="fib", pre_handler=5), "pre_handler must be callable or None, not int"),
    (dict(symbol_name="fib", post_handler="x"), "post_handler must be callable"),
    (dict(symbol_name="fib", fault_handler=[]), "fault_handler must be callable"),
    (dict(symbol_name=7), "symbol_name must be a string, not int"),
    (dict(addr="0xffffffff81000000"), "addr must be an integer, not str"),
    (dict(symbol_name="fib", offset=1.5), "offset must be an integer, not float"),
])
def test_a_bad_kprobe_is_refused_at_registration(km, kwargs, message):
    m, k = km
    with pytest.raises(KprobeError, match=message) as exc:
        k.register_kprobe(Kprobe(**kwargs))
    assert exc.value.errno == errno.EINVAL and k.probes() == []


@pytest.mark.parametrize("kwargs, err, message", [
    (dict(maxactive=10**9), errno.ENOMEM,
     "maxactive 1000000000 is more than the 1048576 instances kpemu allocates"),
    (dict(data_size=4097), errno.E2BIG, "data_size 4097 is more than the 4096"),
    (dict(data_size=-1), errno.EINVAL, "data_size -1 is negative"),
    (dict(maxactive="8"), errno.EINVAL, "maxactive must be an integer, not str"),
    (dict(handler=1), errno.EINVAL, "handler must be callable"),
    (dict(entry_handler=object()), errno.EINVAL, "entry_handler must be callable"),
])
def test_a_bad_kretprobe_is_refused_at_registration(km, kwargs, err, message):
    m, k = km
    with pytest.raises(KprobeError, match=message) as exc:
        k.register_kretprobe(Kretprobe(symbol_name="fib", **kwargs))
    assert exc.value.errno == err and k.probes() == []


def test_the_api_takes_more_than_kprobe_events_does():
    """KRETPROBE_MAXACTIVE_MAX is kprobe_events' cap (r4097: is refused there), not the
    API's: a deep recursion needs one instance a frame."""
    m = Machine()
    k = Kprobes(m)
    m.boot()
    rp = Kretprobe(symbol_name="fib", maxactive=KRETPROBE_MAXACTIVE_MAX + 1)
    k.register_kretprobe(rp)
    assert len(rp.free_instances) == KRETPROBE_MAXACTIVE_MAX + 1


def test_one_kprobes_per_machine():
    m = Machine()
    k = Kprobes(m)
    with pytest.raises(KprobesError, match="already installed on this machine"):
        Kprobes(m)
    assert m.extensions["kprobes"] is k and len(m.trap_handlers[3]) == 1
    with pytest.raises(KprobesError, match="needs an emu.Machine, not str"):
        Kprobes("vmlinux")
    with pytest.raises(KprobesError, match="kretprobe design must be one of"):
        Kprobes(Machine(), kretprobe_design="heap")
