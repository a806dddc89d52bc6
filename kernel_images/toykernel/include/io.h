/*
 * io.h - port I/O, the hypercall and the time-stamp counter.
 */
#ifndef _TOY_IO_H
#define _TOY_IO_H

#include "types.h"
#include "kpemu.h"

static inline void outb(u8 value, u16 port)
{
	asm volatile("outb %b0, %w1" : : "a" (value), "Nd" (port));
}

static inline u8 inb(u16 port)
{
	u8 value;

	asm volatile("inb %w1, %b0" : "=a" (value) : "Nd" (port));
	return value;
}

/*
 * A kpemu hypercall.  Port 0x500 does not fit the 8-bit immediate form of OUT,
 * so the port travels in %dx; the arguments are in %rdi and %rsi.  "memory":
 * whatever the guest wrote before the call must be visible to the host.
 */
static inline void kpemu_hypercall(u32 nr, unsigned long arg0, unsigned long arg1)
{
	asm volatile("outl %%eax, %%dx"
		     : : "a" (nr), "d" (HC_PORT), "D" (arg0), "S" (arg1) : "memory");
}

/* Under QEMU -icount shift=0 (and in kpemu) this is the instruction count. */
static inline u64 rdtsc(void)
{
	u32 lo, hi;

	asm volatile("rdtsc" : "=a" (lo), "=d" (hi));
	return ((u64)hi << 32) | lo;
}

#endif /* _TOY_IO_H */
