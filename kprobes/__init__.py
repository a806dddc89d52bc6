"""kprobes for kpemu: Linux 2.6.13 x86_64 kprobes and return probes on the emulated kernel,
plus the kprobe_events language, the CLI and the pytest plugin.

  errors.py      the layer's errors (KprobesError, KprobeError with errno, KprobeBug)
  probe.py       the probe objects: Kprobe, AggrKprobe, instruction slots, kprobe_addr()
  core.py        Kprobes: the registry, aggregates, enable/disable, misses, the list
  kretprobe.py   return probes (both June 2005 designs), the generic half
  arch/x86_64/   everything that knows x86: the instruction layer, the trap path (Python
                 and C), the kretprobe trampoline's handlers
  events/        the kprobe_events language and the trace
  pytest_plugin  the pytest plugin (entry point pytest11 `kpemu`): machine, kprobes and
                 kprobe_events fixtures, the kpemu marker and options, failure reports

Imports point one way: kprobes -> emu -> unicorn; inside, core -> kretprobe -> arch ->
probe -> errors, with no circle.
"""

from kprobes.core import Kprobes
from kprobes.errors import KprobeBug, KprobeError, KprobesError
from kprobes.kretprobe import (KRETPROBE_MAX_DATA_SIZE, KRETPROBE_MAXACTIVE_MAX, Kretprobe,
                               KretprobeInstance)
from kprobes.probe import AggrKprobe, Kprobe, kprobe_addr

__all__ = ["Kprobes", "Kprobe", "AggrKprobe", "KprobeError", "KprobeBug", "KprobesError",
           "Kretprobe", "KretprobeInstance", "kprobe_addr", "KRETPROBE_MAXACTIVE_MAX",
           "KRETPROBE_MAX_DATA_SIZE"]
