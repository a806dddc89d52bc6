"""kretprobes, x86_64: the stack arithmetic of return probes and the trampoline's thin
handlers (arch_prepare_kretprobe, trampoline_probe_handler and arch_get_kprobe_task of the
June 2005 patches), around the generic code of kprobes/kretprobe.py -- the shape modern
Linux has: an arch wrapper that finds the frame and sets the return ip, a generic
kretprobe_trampoline_handler that walks the instances.

Context: trap.  Runs inside the entry probe's pre_handler and the trampoline probe's
handlers (Unicorn interrupt hooks).

Must not import: unicorn, kprobes.kretprobe (the generic side is handed in).
"""

from emu.cpu import X86_EFLAGS_TF
from emu.engine import REG_IDS
from kprobes.arch.x86_64.insn import direct_call_targets


class ArchKretprobes:
    """The x86_64 side of one KretprobeManager (`rps`, the generic side)."""

    def __init__(self, rps):
        self.rps = rps
        self.m = rps.m
        # Design "stack": arch_prepare_kretprobe's function-static variable.
        self.orig_ret_addr = 0

    def arch_init_kretprobes(self, trampoline_p):
        """Design "task": let trap.c's C path take the common entry and trampoline cases
        (the handlers below and the generic code stay the reference, and take the rest):
        it gets the instance table, the trampoline's probe and address, and where
        `current` is read: the guest profile's current_offset from its current_segment's
        base (-1: no segment, the offset is the address)."""
        rps = self.rps
        layout = self.m.layout
        segment = REG_IDS[layout.current_segment] if layout.current_segment else -1
        rps.core.arch.kcb.set_kretprobes(
            rps.table, trampoline_p, rps, rps.tramp, segment, REG_IDS["sp"],
            layout.current_offset)

    def return_slot(self, regs):
        """At a function's first instruction the return address is at [sp]: the address
        of that slot."""
        return regs.sp

    def arch_prepare_kretprobe(self, slot, tramp):
        """Replace the return address in `slot` with the trampoline and return what was
        there (the instance's ret_addr).

        Design "stack" instead remembers the real address in a function-static variable,
        updated only when the slot does not already hold the trampoline, so the 2nd..nth
        kretprobe on one frame reuse the address the first one saw (and a stale one after
        a tail call from an unrelated earlier hit: the bug §7.3 describes, reproduced on
        purpose)."""
        mem = self.m.mem
        ret = mem.u64(slot)
        if self.rps.design == "stack":
            if ret != tramp:
                self.orig_ret_addr = ret
            ret = self.orig_ret_addr
        mem.set_u64(slot, tramp)
        return ret

    def task_of_stack(self, addr):
        """arch_get_kprobe_task(): the thread_info at the base of the THREAD_SIZE-aligned
        stack holding `addr`, and its task pointer -- wrong on any other stack, which is
        why the redesign keys instances by `current` instead.  A guest with no task
        pointer at a stack's base (Linux's THREAD_INFO_IN_TASK): the task whose `stack`
        is that base, or 0 on any other stack (an interrupt stack)."""
        m = self.m
        layout = m.layout
        base = addr & ~(layout.thread_size - 1)
        if layout.ti_task is not None:
            return m.mem.u64(base + layout.ti_task)
        current = m.current
        if current is not None and current.stack == base:
            return current.addr
        return next((t.addr for t in m.tasks() if t.stack == base), 0)

    def functions_calling(self, target):
        """Names of the kernel functions (not modules') with a direct call to `target`,
        decoded from their text."""
        m = self.m
        return {fn.name for fn in m.symbols.functions() if fn.module is None and
                target in direct_call_targets(m.read(fn.addr, fn.size), fn.addr)}

    # -- the trampoline probe's handlers ----------------------------------------------

    def trampoline_probe_handler(self, p, regs):
        """Design "task", the trampoline's pre_handler: the generic handler reports and
        recycles the current task's instances and gives the real return address; resume
        there, no single-step (returns 1)."""
        ret_addr = self.rps.kretprobe_trampoline_handler(regs)
        if ret_addr is not None:
            regs.ip = ret_addr
        return 1

    def _popped_slot(self, regs):
        """After `ret` popped the trampoline's address, the slot it was popped from."""
        return regs.sp - 8

    def trampoline_probe_handler_stack(self, p, regs):
        """Design "stack", the trampoline's pre_handler: report the returns of the slot
        `ret` just popped; the nop is then single-stepped (returns 0)."""
        self.rps.report_slot_returns(self._popped_slot(regs), regs)
        return 0

    def trampoline_post_handler(self, p, regs, flags):
        """Design "stack", after the nop's single-step: resume at the real return
        address, every instance of that slot recycled.  The nop ran for kprobes, not
        for the guest, and its step's TF goes (the trampoline probe resumes in its post
        handler: no resume_execution)."""
        ret_addr = self.rps.recycle_slot(self._popped_slot(regs))
        if ret_addr is not None:
            regs.ip = ret_addr
        self.m.clock.discount(1)
        regs.flags = regs.flags & ~X86_EFLAGS_TF
