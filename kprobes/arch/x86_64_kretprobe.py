"""kretprobes, x86_64: where the return address is and how a task is found from a stack
address (arch_prepare_kretprobe and arch_get_kprobe_task of the June 2005 patches).

Runs inside the entry probe's pre_handler and the trampoline's handlers (Unicorn hooks).
"""


def arch_prepare_kretprobe(rps, sara, tramp):
    """At a function's first instruction [rsp] is the return address: replace it with the
    trampoline and return what was there (the instance's ret_addr).

    Design "stack" instead remembers the real address in a function-static variable,
    updated only when [rsp] is not already the trampoline, so the 2nd..nth kretprobe on
    one frame reuse the address the first one saw (and a stale one after a tail call
    from an unrelated earlier hit: the bug §7.3 describes, reproduced on purpose)."""
    mem = rps.m.mem
    ret = mem.u64(sara)
    if rps.design == "stack":
        if ret != tramp:
            rps.orig_ret_addr = ret
        ret = rps.orig_ret_addr
    mem.set_u64(sara, tramp)
    return ret


def task_of_stack(m, addr):
    """arch_get_kprobe_task(): the thread_info at the base of the THREAD_SIZE-aligned
    stack holding `addr`, and its task pointer -- wrong on any other stack, which is why
    the redesign keys instances by `current` instead."""
    layout = m.layout
    thread_info = addr & ~(layout.thread_size - 1)
    return m.mem.u64(thread_info + layout.ti_task)


def direct_call_targets(m, fn):
    """Targets of the `call rel32` instructions in function `fn` (its original bytes)."""
    from capstone import CS_ARCH_X86, CS_MODE_64, Cs

    cs = Cs(CS_ARCH_X86, CS_MODE_64)
    targets = set()
    for _addr, _size, mnemonic, op_str in cs.disasm_lite(m.read(fn.addr, fn.size), fn.addr):
        if mnemonic == "call" and op_str.startswith("0x"):
            targets.add(int(op_str, 16))
    return targets
