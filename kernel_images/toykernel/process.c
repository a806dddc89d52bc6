/*
 * process.c - per-thread CPU state at exit and exec, and the idle loop.
 */
#include "types.h"
#include "irqflags.h"
#include "kernel.h"
#include "sched.h"

unsigned long idle_halts;

/*
 * A task is going away.  As in Linux 2.6.13 x86_64, the first thing is to let
 * kprobes drop the return-probe instances this task still holds.
 */
void exit_thread(void)
{
	struct task_struct *me = current;

	kprobe_flush_task(me);
	me->thread.debugreg7 = 0;	/* no hardware breakpoints survive the task */
}

/* exec: the old program's thread state goes; kprobes first, as in exit_thread. */
void flush_thread(void)
{
	struct task_struct *tsk = current;

	kprobe_flush_task(tsk);
	tsk->thread.fs = 0;
	tsk->thread.gs = 0;
	tsk->thread.debugreg7 = 0;
}

/*
 * The idle task (pid 0).  The run-list check and the hlt must not be separated
 * by an interrupt, or a wakeup in between would be slept through until the next
 * tick: check with interrupts off, then sti; hlt (safe_halt).
 */
void __noreturn cpu_idle(void)
{
	for (;;) {
		local_irq_disable();
		if (!nr_running()) {
			idle_halts++;
			safe_halt();
		} else {
			local_irq_enable();
			schedule();
		}
	}
}
