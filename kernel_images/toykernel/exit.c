/*
 * exit.c - a task's end, and waiting for children.
 */
#include "types.h"
#include "irqflags.h"
#include "kernel.h"
#include "sched.h"
#include "syscalls.h"

void __noreturn do_exit(long code)
{
	struct task_struct *tsk = current;

	exit_thread();

	local_irq_disable();
	tsk->exit_code = code;
	tsk->state = TASK_ZOMBIE;	/* stays on the task list for its parent */
	if (tsk->parent->wait_chldexit)
		wake_up_process(tsk->parent);
	schedule();

	/* A zombie is never picked to run again. */
	printk("do_exit: zombie %s[%d] scheduled\n", tsk->comm, tsk->pid);
	machine_power_off(0x7f);
}

long __noreturn sys_exit(long code)
{
	do_exit(code);
}

/*
 * Sleep until every child of the caller has exited; return how many children
 * there are (all zombies by then), or -ECHILD if there are none.
 */
long sys_wait(void)
{
	struct task_struct *me = current, *p;
	unsigned long flags;
	int alive, zombies;

	local_irq_save(flags);
	for (;;) {
		alive = zombies = 0;
		for (p = init_task.tasks_next; p != &init_task; p = p->tasks_next) {
			if (p->parent != me || p == me)
				continue;
			if (p->state == TASK_ZOMBIE)
				zombies++;
			else
				alive++;
		}
		if (!alive)
			break;
		me->wait_chldexit = 1;
		me->state = TASK_INTERRUPTIBLE;
		schedule();
		me->wait_chldexit = 0;
	}
	local_irq_restore(flags);
	return zombies ? zombies : -ECHILD;
}
