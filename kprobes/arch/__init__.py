"""Architecture parts of kprobes: only x86_64 here (kprobes/arch/x86_64/).  The generic
core reaches them through what this package exports and carries their data opaquely
(p.ainsn):

  MAX_INSN_SIZE          the size of an instruction slot
  arch_init_kprobes(k)   the trap path for a Kprobes object: its handlers in the machine's
                         trap table; returns the object whose prepare / arm / disarm /
                         remove / can_probe the core calls
  ArchKretprobes(rps)    the return-address arithmetic and the trampoline's handlers
  KretprobeInstance      struct kretprobe_instance, in the arch's C so its trap path
                         works on it natively
"""

from kprobes.arch.x86_64 import (MAX_INSN_SIZE, ArchKretprobes, GuestKprobes,
                                 KretprobeInstance, arch_init_kprobes)

__all__ = ["MAX_INSN_SIZE", "ArchKretprobes", "GuestKprobes", "KretprobeInstance", "arch_init_kprobes"]
