/*
 * sched.c - a preemptive round-robin scheduler for one CPU.
 *
 * All tasks, zombies included, sit on one circular list through init_task (the
 * idle task, pid 0).  schedule() walks it from the task after the current one and
 * runs the first runnable task it finds; the idle task runs only when nothing else
 * can.  The timer gives each task DEF_TIMESLICE ticks, then sets need_resched and
 * the interrupt return path (entry.S) preempts it wherever it was.
 *
 * One CPU, so "locking" is interrupts off: every change of task state happens
 * with interrupts disabled, which is why a task can never be preempted between
 * deciding to sleep and calling schedule().
 */
#include "types.h"
#include "irqflags.h"
#include "kernel.h"
#include "sched.h"
#include "syscalls.h"

union thread_union init_thread_union __section(".data..init_task") __aligned(THREAD_SIZE) = {
	.thread_info = { .task = &init_task },
};

struct task_struct init_task = {
	.state		= TASK_RUNNING,
	.pid		= 0,
	.comm		= "swapper",
	.stack		= &init_thread_union,
	.tasks_next	= &init_task,
	.parent		= &init_task,
	.time_slice	= DEF_TIMESLICE,
};

struct x8664_pda boot_cpu_pda = {
	.pcurrent	= &init_task,
};

unsigned long nr_context_switches;

/* The next task to run after prev: round robin, idle only as a last resort. */
static struct task_struct *pick_next_task(struct task_struct *prev)
{
	struct task_struct *p = prev->tasks_next;

	for (;;) {
		if (p->state == TASK_RUNNING && !is_idle_task(p))
			return p;
		if (p == prev)
			return &init_task;
		p = p->tasks_next;
	}
}

void schedule(void)
{
	struct task_struct *prev, *next;
	unsigned long flags;

	local_irq_save(flags);
	prev = current;
	clear_tsk_need_resched(prev);
	next = pick_next_task(prev);
	if (next != prev) {
		nr_context_switches++;
		if (task_thread_info(prev)->preempt_count & PREEMPT_ACTIVE)
			prev->nivcsw++;
		else
			prev->nvcsw++;
		next->time_slice = DEF_TIMESLICE;
		switch_to(prev, next);
		/* ... and, much later, prev runs again from here */
	}
	local_irq_restore(flags);
}

/*
 * Preemption from the interrupt return path (entry.S ret_from_intr), with
 * interrupts off and the interrupted task's pt_regs on its stack.
 * PREEMPT_ACTIVE marks the switch as involuntary.
 */
void preempt_schedule_irq(void)
{
	struct thread_info *ti = current_thread_info();

	ti->preempt_count += PREEMPT_ACTIVE;
	schedule();
	ti->preempt_count -= PREEMPT_ACTIVE;
}

/* Timer tick, interrupts off: has the running task used up its slice? */
void scheduler_tick(void)
{
	struct task_struct *p = current;

	if (is_idle_task(p))
		return;
	if (--p->time_slice <= 0) {
		p->time_slice = DEF_TIMESLICE;
		set_tsk_need_resched(p);
	}
}

int wake_up_process(struct task_struct *p)
{
	unsigned long flags;
	int woken = 0;

	local_irq_save(flags);
	if (p->state == TASK_INTERRUPTIBLE) {
		p->state = TASK_RUNNING;
		p->timeout = 0;
		woken = 1;
		/* If the CPU is idling, make it look at the run list now. */
		if (is_idle_task(current))
			set_tsk_need_resched(current);
	}
	local_irq_restore(flags);
	return woken;
}

/* From the timer: wake every sleeper whose deadline has come. */
void wake_up_expired(void)
{
	struct task_struct *p;

	for (p = init_task.tasks_next; p != &init_task; p = p->tasks_next)
		if (p->state == TASK_INTERRUPTIBLE && p->timeout &&
		    time_after_eq(jiffies, p->timeout))
			wake_up_process(p);
}

/* Runnable tasks other than the idle task. */
int nr_running(void)
{
	struct task_struct *p;
	int n = 0;

	for (p = init_task.tasks_next; p != &init_task; p = p->tasks_next)
		if (p->state == TASK_RUNNING)
			n++;
	return n;
}

struct task_struct *find_task_by_pid(int pid)
{
	struct task_struct *p = &init_task;

	do {
		if (p->pid == pid)
			return p;
		p = p->tasks_next;
	} while (p != &init_task);
	return NULL;
}

/* Sleep for `ticks` timer ticks; the idle task hlt's if nobody else can run. */
long sys_sleep(unsigned long ticks)
{
	struct task_struct *tsk = current;
	unsigned long flags, expire;

	local_irq_save(flags);
	expire = jiffies + ticks;
	while (time_before(jiffies, expire)) {
		tsk->timeout = expire;
		tsk->state = TASK_INTERRUPTIBLE;
		schedule();
	}
	local_irq_restore(flags);
	return 0;
}
