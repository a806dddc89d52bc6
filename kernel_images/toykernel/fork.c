/*
 * fork.c - creating kernel threads.
 *
 * Tasks and their stacks come from fixed pools and are never freed: zombies keep
 * their task_struct (and stay on the task list) so their exit codes can be read.
 */
#include "types.h"
#include "irqflags.h"
#include "kernel.h"
#include "sched.h"

static struct task_struct task_pool[NR_TASKS];
static union thread_union task_stacks[NR_TASKS] __aligned(THREAD_SIZE);
static int nr_forked;
static int last_pid;

/*
 * Build the stack a new task is first switched to: what switch_to pops
 * (r15 r14 r13 r12 rbx rbp) and the address its ret goes to, ret_from_fork,
 * which calls fn(arg) from %rbx/%r12.  16 bytes stay free at the top so %rsp
 * never reaches the next stack (and is 16-byte aligned at the call).
 */
static unsigned long *copy_thread(union thread_union *stack, int (*fn)(void *), void *arg)
{
	unsigned long *sp = &stack->stack[THREAD_SIZE / sizeof(long) - 2];

	*--sp = (unsigned long)ret_from_fork;
	*--sp = 0;			/* rbp: the end of the frame-pointer chain */
	*--sp = (unsigned long)fn;	/* rbx */
	*--sp = (unsigned long)arg;	/* r12 */
	*--sp = 0;			/* r13 */
	*--sp = 0;			/* r14 */
	*--sp = 0;			/* r15 */
	return sp;
}

/* Create a task running fn(arg), named `name`, child of current; returns its pid. */
long do_fork(int (*fn)(void *), void *arg, const char *name)
{
	struct task_struct *p, *last;
	union thread_union *stack;
	unsigned long flags;
	long pid;

	local_irq_save(flags);
	if (nr_forked == NR_TASKS) {
		local_irq_restore(flags);
		return -EAGAIN;
	}
	p = &task_pool[nr_forked];
	stack = &task_stacks[nr_forked];
	nr_forked++;

	stack->thread_info.task = p;
	stack->thread_info.flags = 0;
	stack->thread_info.preempt_count = 0;
	stack->thread_info.cpu = 0;

	p->pid = pid = ++last_pid;
	strlcpy(p->comm, name, TASK_COMM_LEN);
	p->stack = stack;
	p->parent = current;
	p->exit_code = 0;
	p->timeout = 0;
	p->time_slice = DEF_TIMESLICE;
	p->wait_chldexit = 0;
	p->thread.rsp = (unsigned long)copy_thread(stack, fn, arg);

	/* Append to the list (just before init_task): list order is pid order. */
	for (last = &init_task; last->tasks_next != &init_task; last = last->tasks_next)
		;
	p->tasks_next = &init_task;
	last->tasks_next = p;
	p->state = TASK_RUNNING;
	local_irq_restore(flags);
	return pid;
}

long kernel_thread(int (*fn)(void *), void *arg, const char *name)
{
	return do_fork(fn, arg, name);
}
