/*
 * kprobes.c - the guest's one piece of kprobes: telling the host a task is done.
 *
 * kprobes itself lives in the host.  When a task exits or execs, the return-probe
 * instances it holds must go back to their free lists; the host cannot see that
 * happen, so the guest says so through the hypercall port (a no-op on a real PC).
 * In .kprobes.text: probing it would interfere with the flush it announces.
 */
#include "types.h"
#include "io.h"
#include "kpemu.h"
#include "sched.h"

noinline void __kprobes kprobe_flush_task(struct task_struct *tk)
{
	kpemu_hypercall(HC_KPROBE_FLUSH_TASK, (unsigned long)tk,
			(unsigned long)__builtin_return_address(0));
}
