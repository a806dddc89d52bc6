"""kpemu's machine: a PC built on Unicorn that boots a real compiled x86_64 kernel.

Layers point one way: kprobes -> emu -> unicorn.  Only emu.engine imports unicorn; nothing
in emu imports kprobes.
"""

from emu.errors import (EmuError, GuestFault, ImageError, KpemuError, MachineError, MemoryFault,
                        ModuleLoadError)
from emu.machine import Machine, RunResult

__all__ = ["Machine", "RunResult", "KpemuError", "EmuError", "GuestFault", "ImageError",
           "MachineError", "MemoryFault", "ModuleLoadError"]
