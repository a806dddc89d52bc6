/*
 * workload.c - the default workload: a handful of tasks that run interleaved
 * under preemption and exercise what kprobes has to survive.
 *
 * Everything is deterministic: each task's exit code is a known value, which init
 * checks (workload_check) before it powers off with success or failure.  The run
 * is kept small (well under a million instructions from startup_64 to power-off)
 * because tests single-step through all of it with a kprobe on every instruction.
 *
 *   fib      recursive fib(15..18)
 *   mkdir    mkdir through int $0x80, a duplicate (-EEXIST), getpid, write
 *   exec     execve("/bin/true") -> flush_old_exec -> flush_thread, then exit
 *   mixer    jump-table switch, indirect calls, pushf/popf, cli/sti,
 *            rip-relative read-modify-write, a tail call, string loops
 *   sleeper  sleeps 2 ticks at a time while the others compute, then a few
 *            times more with nothing else to run, so the idle task hlt's
 *   busy1/2  the same function in two tasks, each preempted inside it
 */
#include "types.h"
#include "irqflags.h"
#include "kernel.h"
#include "sched.h"
#include "syscalls.h"
#include "workload.h"

#define FIB_FIRST	15
#define FIB_LAST	18
#define FIB_ROUNDS	1
#define FIB_EXPECT	(FIB_ROUNDS * (610 + 987 + 1597 + 2584))

/*
 * The expected checksums were computed outside the guest (a Python model of
 * mixer_thread and busy_sum), not copied from a run.
 */
#define MIXER_ROUNDS	240
#define MIXER_EXPECT	0x7c68d90e	/* checksum 0x1d9f6e60fc68d90e, low 31 bits */

#define BUSY_N		10000
#define BUSY_EXPECT	0x53337ee5	/* busy_sum(10000) = 90094531784179429, low 31 bits */

#define SLEEPS		3
#define SLEEP_TICKS	2

/* ---- recursion ------------------------------------------------------------- */

noinline long fib(int n)
{
	long a, b;

	if (n < 2)
		return n;
	a = fib(n - 1);
	b = fib(n - 2);
	/*
	 * An empty asm that "changes" b: without it gcc turns the second call into
	 * a loop with an accumulator.  fib must stay plain double recursion.
	 */
	asm("" : "+r" (b));
	return a + b;
}

static int fib_thread(void *unused)
{
	long r[FIB_LAST - FIB_FIRST + 1], total = 0;
	int round, n;

	for (round = 0; round < FIB_ROUNDS; round++) {
		for (n = FIB_FIRST; n <= FIB_LAST; n++) {
			r[n - FIB_FIRST] = fib(n);
			total += r[n - FIB_FIRST];
		}
		printk("fib[%d]: round %d: fib(%d..%d) = %ld %ld %ld %ld\n",
		       current->pid, round, FIB_FIRST, FIB_LAST, r[0], r[1], r[2], r[3]);
	}
	return total;
}

/* ---- system calls ------------------------------------------------------------ */

static int mkdir_thread(void *unused)
{
	static const char msg[] = "mkdir: hello through sys_write\n";
	long pid = getpid(), r[4], w;
	int ok;

	r[0] = mkdir("/tmp");
	r[1] = mkdir("/home");
	r[2] = mkdir("/var");
	r[3] = mkdir("/tmp");			/* already there: -EEXIST */
	w = write(1, msg, sizeof(msg) - 1);
	printk("mkdir[%ld]: mkdir /tmp %ld, /home %ld, /var %ld, /tmp again %ld\n",
	       pid, r[0], r[1], r[2], r[3]);

	ok = (r[0] == 0) + (r[1] == 0) + (r[2] == 0) + (r[3] == -EEXIST);
	ok += pid == current->pid;
	ok += w == sizeof(msg) - 1;
	return ok;				/* 6 when all is well */
}

static int exec_thread(void *unused)
{
	long pid = getpid(), r;

	printk("exec[%ld]: execve(\"/bin/true\")\n", pid);
	r = execve("/bin/true");
	printk("%s[%ld]: execve returned %ld\n", current->comm, pid, r);
	_exit(r == 0 && !strcmp(current->comm, "true") ? 0 : 1);
}

static int sleeper_thread(void *unused)
{
	int i, polls = 0, ok = 0;

	/* Like a daemon: look around every SLEEP_TICKS while others can run ... */
	while (nr_running() > 1) {
		sleep(SLEEP_TICKS);
		polls++;
	}
	/* ... then sleep with nothing else runnable: the idle task hlt's. */
	for (i = 0; i < SLEEPS; i++) {
		unsigned long before = jiffies;

		sleep(SLEEP_TICKS);
		ok += jiffies - before >= SLEEP_TICKS;
	}
	printk("sleeper[%d]: %d polls, then slept %d x %d ticks alone\n",
	       current->pid, polls, ok, SLEEP_TICKS);
	return ok;
}

/* ---- the same function in two tasks ----------------------------------------- */

/* Long enough (a few ticks) that both tasks are preempted inside it. */
noinline unsigned long busy_sum(unsigned long n)
{
	unsigned long s = 0, i;

	for (i = 1; i <= n; i++)
		s += i ^ (s >> 5);
	return s;
}

static int busy_thread(void *arg)
{
	unsigned long n = (unsigned long)arg, s;

	s = busy_sum(n);
	printk("%s[%d]: busy_sum(%lu) = %lu\n", current->comm, current->pid, n, s);
	return s & 0x7fffffff;
}

/* ---- the instruction mix ---------------------------------------------------- */

unsigned long mix_counter;		/* a global: rip-relative loads and stores */

/* A dense switch: gcc compiles it to a jump through a table in .rodata. */
noinline unsigned long mix_switch(unsigned long op, unsigned long v)
{
	switch (op) {
	case 0:
		v = v * 3 + 1;
		break;
	case 1:
		v ^= 0x5a5a5a5aUL;
		break;
	case 2:
		v = (v << 7) | (v >> 57);
		break;
	case 3:
		v -= 0x1234;
		break;
	case 4:
		v = ~v;
		break;
	case 5:
		v += mix_counter;
		break;
	case 6:
		v = v * 7 - 3;
		break;
	case 7:
		v ^= v >> 3;
		break;
	case 8:
		v += v >> 11;
		break;
	case 9:
		v = -v;
		break;
	case 10:
		v ^= mix_counter << 5;
		break;
	default:
		v++;
		break;
	}
	return v;
}

static noinline unsigned long mix_add(unsigned long v)
{
	return v + 0x9e3779b9UL;
}

static noinline unsigned long mix_xor(unsigned long v)
{
	return v ^ (v >> 13);
}

static noinline unsigned long mix_rol(unsigned long v)
{
	return (v << 17) | (v >> 47);
}

static noinline unsigned long mix_mul(unsigned long v)
{
	return v * 0x2545f4914f6cdd1dUL;
}

static unsigned long (*const mix_ops[4])(unsigned long) = {
	mix_add, mix_xor, mix_rol, mix_mul,
};

/* An indirect call through a function-pointer array. */
noinline unsigned long mix_indirect(unsigned long v, unsigned int i)
{
	v = mix_ops[i & 3](v);
	return v + 1;
}

/* pushf/popf (irq save/restore) and cli/sti around global updates. */
noinline unsigned long mix_irqsave(unsigned long v)
{
	unsigned long flags;

	local_irq_save(flags);
	mix_counter++;
	v += mix_counter;
	local_irq_restore(flags);

	local_irq_disable();
	v ^= v >> 9;
	local_irq_enable();
	return v;
}

noinline unsigned long mix_leaf(unsigned long v, unsigned long c)
{
	return (v ^ c) + (c << 2);
}

/* Its last act is a call: gcc turns it into a jmp (a tail call). */
noinline unsigned long mix_tail(unsigned long v)
{
	mix_counter++;
	return mix_leaf(v ^ 3, mix_counter);
}

/* Byte loops (no rep string instructions): reverse a string, hash the result. */
noinline unsigned long mix_strops(char *dst, const char *src)
{
	unsigned long sum = 0;
	size_t n = 0, i;

	while (src[n])
		n++;
	for (i = 0; i < n; i++)
		dst[i] = src[n - 1 - i];
	dst[n] = '\0';
	for (i = 0; i < n; i++)
		sum = sum * 31 + (unsigned char)dst[i];
	return sum;
}

static int mixer_thread(void *unused)
{
	unsigned long v = 1;
	char buf[16];
	unsigned int i;

	for (i = 0; i < MIXER_ROUNDS; i++) {
		v = mix_switch(i % 12, v);
		v = mix_indirect(v, i);
		if ((i & 7) == 0)
			v = mix_irqsave(v);
		v = mix_tail(v);
	}
	v += mix_strops(buf, "kprobes");
	printk("mixer[%d]: checksum %lx, counter %lu, \"%s\"\n",
	       current->pid, v, mix_counter, buf);
	return v & 0x7fffffff;
}

/* ---- the table init works from ------------------------------------------------ */

struct workload_task {
	const char	*name;
	int		(*fn)(void *);
	unsigned long	arg;
	long		expect;		/* the exit code it must end with */
	long		pid;
};

static struct workload_task workload[] = {
	{ "fib",	fib_thread,	0,	FIB_EXPECT },
	{ "mkdir",	mkdir_thread,	0,	6 },
	{ "exec",	exec_thread,	0,	0 },
	{ "mixer",	mixer_thread,	0,	MIXER_EXPECT },
	{ "sleeper",	sleeper_thread,	0,	SLEEPS },
	{ "busy1",	busy_thread,	BUSY_N,	BUSY_EXPECT },
	{ "busy2",	busy_thread,	BUSY_N,	BUSY_EXPECT },
};

/* Called by init: fork every task; returns how many were started. */
int workload_start(void)
{
	unsigned int i;
	int started = 0;

	for (i = 0; i < ARRAY_SIZE(workload); i++) {
		struct workload_task *w = &workload[i];

		w->pid = kernel_thread(w->fn, (void *)w->arg, w->name);
		if (w->pid > 0)
			started++;
	}
	return started;
}

/* Called by init after wait(): every task must be a zombie with its exit code. */
int workload_check(void)
{
	unsigned int i;
	int failed = 0;

	for (i = 0; i < ARRAY_SIZE(workload); i++) {
		struct workload_task *w = &workload[i];
		struct task_struct *t = find_task_by_pid(w->pid);

		if (t && t->state == TASK_ZOMBIE && t->exit_code == w->expect) {
			printk("init: %s[%ld] exited with %ld: ok\n", t->comm, w->pid, t->exit_code);
		} else {
			failed++;
			printk("init: %s[%ld]: FAILED (state %ld, exit %ld, expected %ld)\n",
			       w->name, w->pid, t ? t->state : -1L, t ? t->exit_code : 0L,
			       w->expect);
		}
	}
	return failed;
}
