"""kprobes, x86_64.  Where things are:

  insn.py       the instruction layer, no machine needed: decode, the copy for the slot,
                the resume actions and resume_execution()
  trap.py       the trap path: arch_init_kprobes, the int3 handler (kprobe_handler), the
                debug handler (post_kprobe_handler), the fault handler, arm / disarm
  trap.c        the same trap path for the plain hit and the common return-probe
                cases, in C, the per-CPU state and the kretprobe instance struct
                (built as kprobes.arch.x86_64._trap)
  kretprobe.py  arch_prepare_kretprobe and the kretprobe trampoline's handlers
  guest_kprobes.py  the rule for an address the guest kernel's own kprobes share
"""

from kprobes.arch.x86_64._trap import KretprobeInstance
from kprobes.arch.x86_64.guest_kprobes import GuestKprobes
from kprobes.arch.x86_64.insn import MAX_INSN_SIZE
from kprobes.arch.x86_64.kretprobe import ArchKretprobes
from kprobes.arch.x86_64.trap import arch_init_kprobes

__all__ = ["MAX_INSN_SIZE", "ArchKretprobes", "GuestKprobes", "KretprobeInstance", "arch_init_kprobes"]
