"""kprobes for kpemu: Linux 2.6.13 x86_64 kprobes and return probes on the emulated kernel,
plus the kprobe_events language, the CLI and the pytest plugin.

Imports point one way: kprobes -> emu -> unicorn.
"""

from kprobes.core import AggrKprobe, Kprobe, KprobeError, Kprobes
from kprobes.kretprobe import Kretprobe, KretprobeInstance

__all__ = ["Kprobes", "Kprobe", "AggrKprobe", "KprobeError", "Kretprobe",
           "KretprobeInstance"]
