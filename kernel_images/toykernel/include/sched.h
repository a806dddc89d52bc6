/*
 * sched.h - tasks, their stacks, the per-CPU area and the scheduler interface.
 *
 * The host reads these structures through the asm-offsets symbols (asm-offsets.c),
 * never through numbers of its own, so fields may move; the names may not.
 */
#ifndef _TOY_SCHED_H
#define _TOY_SCHED_H

#include "types.h"
#include "ptrace.h"

#define THREAD_SIZE		8192	/* kernel stack per task, THREAD_SIZE aligned */
#define TASK_COMM_LEN		16
#define NR_TASKS		16	/* the fixed pool do_fork allocates from */

/* task->state, with Linux 2.6.13's values */
#define TASK_RUNNING		0
#define TASK_INTERRUPTIBLE	1
#define TASK_ZOMBIE		16

/* thread_info->flags */
#define TIF_NEED_RESCHED	3
#define _TIF_NEED_RESCHED	(1UL << TIF_NEED_RESCHED)

/* thread_info->preempt_count */
#define HARDIRQ_OFFSET		0x10000		/* one per nested hard interrupt */
#define PREEMPT_ACTIVE		0x10000000	/* set while schedule() preempts from an IRQ */

/* Ticks a task may run before the timer asks for a reschedule. */
#define DEF_TIMESLICE		1

struct task_struct;

/* At the base of every kernel stack: rsp & ~(THREAD_SIZE - 1) finds it. */
struct thread_info {
	struct task_struct	*task;		/* first: the contract relies on it */
	unsigned long		flags;		/* TIF_* */
	int			preempt_count;	/* 0: preemptible */
	int			cpu;
};

union thread_union {
	struct thread_info	thread_info;
	unsigned long		stack[THREAD_SIZE / sizeof(long)];
};

/* CPU state that is not on the stack. */
struct thread_struct {
	unsigned long		rsp;		/* saved by switch_to */
	unsigned long		fs;
	unsigned long		gs;
	unsigned long		debugreg7;
};

struct task_struct {
	volatile long		state;		/* TASK_* */
	int			pid;
	char			comm[TASK_COMM_LEN];
	struct thread_struct	thread;
	void			*stack;		/* its union thread_union */
	struct task_struct	*tasks_next;	/* circular list through init_task */
	long			exit_code;
	struct task_struct	*parent;
	unsigned long		timeout;	/* sleeping until this jiffy (0: not on a timer) */
	int			time_slice;	/* ticks left */
	int			wait_chldexit;	/* sleeping in sys_wait */
	unsigned long		nvcsw;		/* voluntary context switches */
	unsigned long		nivcsw;		/* involuntary (preempted) */
};

/* The per-CPU data area, reached through %gs (MSR_GS_BASE). */
struct x8664_pda {
	struct task_struct	*pcurrent;	/* first: %gs:0 is current */
	unsigned long		data_offset;
	int			irqcount;	/* hard interrupts in progress */
	int			cpunumber;
};

extern struct task_struct init_task;		/* pid 0, the idle task */
extern union thread_union init_thread_union;
extern struct x8664_pda boot_cpu_pda;

/*
 * current: %gs:pcurrent.  Not volatile: from the point of view of the code that
 * reads it, current never changes (the task that reads it is always current).
 */
static inline struct task_struct *get_current(void)
{
	struct task_struct *t;

	asm("movq %%gs:%c1, %0" : "=r" (t) : "i" (offsetof(struct x8664_pda, pcurrent)));
	return t;
}
#define current get_current()

static inline struct thread_info *current_thread_info(void)
{
	unsigned long sp;

	asm("movq %%rsp, %0" : "=r" (sp));
	return (struct thread_info *)(sp & ~(THREAD_SIZE - 1UL));
}

static inline struct thread_info *task_thread_info(struct task_struct *p)
{
	return p->stack;
}

static inline void set_tsk_need_resched(struct task_struct *p)
{
	task_thread_info(p)->flags |= _TIF_NEED_RESCHED;
}

static inline void clear_tsk_need_resched(struct task_struct *p)
{
	task_thread_info(p)->flags &= ~_TIF_NEED_RESCHED;
}

static inline bool is_idle_task(struct task_struct *p)
{
	return p == &init_task;
}

/* sched.c */
extern unsigned long nr_context_switches;
extern unsigned long idle_halts;
void schedule(void);
void preempt_schedule_irq(void);
void scheduler_tick(void);
int wake_up_process(struct task_struct *p);
void wake_up_expired(void);
int nr_running(void);
struct task_struct *find_task_by_pid(int pid);

/* fork.c, exit.c, process.c */
long do_fork(int (*fn)(void *), void *arg, const char *name);
long kernel_thread(int (*fn)(void *), void *arg, const char *name);
void __noreturn do_exit(long code);
void exit_thread(void);
void flush_thread(void);
void __noreturn cpu_idle(void);

/* kprobes.c */
void kprobe_flush_task(struct task_struct *tk);

/* entry.S */
struct task_struct *switch_to(struct task_struct *prev, struct task_struct *next);
void ret_from_fork(void);

#endif /* _TOY_SCHED_H */
