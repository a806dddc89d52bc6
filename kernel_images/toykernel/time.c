/*
 * time.c - the 8254 PIT drives jiffies and the scheduler tick.
 *
 * The rate is hz= on the command line (default 50000: with one instruction per
 * nanosecond, as under QEMU -icount shift=0, a tick every ~20,000 instructions).
 */
#include "types.h"
#include "io.h"
#include "kernel.h"
#include "ptrace.h"
#include "sched.h"

#define PIT_TICK_RATE	1193182		/* the PIT's input clock, Hz */
#define PIT_CH0		0x40
#define PIT_MODE	0x43

volatile unsigned long jiffies;
unsigned int timer_hz = 50000;

void time_init(void)
{
	unsigned int hz = timer_hz;
	unsigned int divisor;

	/* The 16-bit counter limits the slowest rate to ~19 Hz. */
	if (hz < 19)
		hz = 19;
	if (hz > PIT_TICK_RATE)
		hz = PIT_TICK_RATE;
	divisor = (PIT_TICK_RATE + hz / 2) / hz;
	if (divisor > 0xffff)
		divisor = 0xffff;
	timer_hz = hz;
	printk("time: PIT channel 0 at %u Hz (divisor %u)\n", hz, divisor);

	outb(0x34, PIT_MODE);		/* channel 0, lobyte/hibyte, mode 2 */
	outb(divisor & 0xff, PIT_CH0);
	outb(divisor >> 8, PIT_CH0);	/* the count starts here */
}

/* The global part of a tick: time, and the sleepers whose time has come. */
void do_timer(struct pt_regs *regs)
{
	jiffies++;
	wake_up_expired();
}

/* The per-task part: charge the tick to whoever was running. */
void update_process_times(void)
{
	scheduler_tick();
}

void timer_interrupt(struct pt_regs *regs)
{
	do_timer(regs);
	update_process_times();
}
