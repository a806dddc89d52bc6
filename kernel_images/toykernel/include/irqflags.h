/*
 * irqflags.h - turning interrupts off and on (one CPU: this is all the locking).
 *
 * local_irq_save/restore is the pushf/cli ... popf pattern: it nests, because
 * restore puts back exactly the IF the caller had.
 */
#ifndef _TOY_IRQFLAGS_H
#define _TOY_IRQFLAGS_H

#include "types.h"
#include "page.h"

static inline unsigned long native_save_fl(void)
{
	unsigned long flags;

	asm volatile("pushfq; popq %0" : "=rm" (flags) : : "memory");
	return flags;
}

static inline unsigned long arch_local_irq_save(void)
{
	unsigned long flags;

	asm volatile("pushfq; popq %0; cli" : "=rm" (flags) : : "memory");
	return flags;
}

static inline void local_irq_restore(unsigned long flags)
{
	asm volatile("pushq %0; popfq" : : "rm" (flags) : "memory", "cc");
}

#define local_irq_save(flags)	do { (flags) = arch_local_irq_save(); } while (0)

static inline void local_irq_disable(void)
{
	asm volatile("cli" : : : "memory");
}

static inline void local_irq_enable(void)
{
	asm volatile("sti" : : : "memory");
}

static inline bool irqs_disabled(void)
{
	return !(native_save_fl() & X86_EFLAGS_IF);
}

/*
 * sti; hlt back to back: sti takes effect only after the next instruction, so no
 * interrupt can slip in between the caller's "nothing to run" check and the hlt.
 */
static inline void safe_halt(void)
{
	asm volatile("sti; hlt" : : : "memory");
}

#endif /* _TOY_IRQFLAGS_H */
