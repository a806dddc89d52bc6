/*
 * irq.c - the 8259A interrupt controller pair and do_IRQ.
 *
 * Only IRQ0 (the PIT) is used.  The master's vectors are moved to 32-39 and the
 * slave's to 40-47, away from the CPU exceptions the BIOS layout collides with.
 */
#include "types.h"
#include "desc.h"
#include "io.h"
#include "kernel.h"
#include "ptrace.h"
#include "sched.h"

#define PIC_MASTER_CMD	0x20
#define PIC_MASTER_IMR	0x21
#define PIC_SLAVE_CMD	0xa0
#define PIC_SLAVE_IMR	0xa1
#define PIC_CASCADE_IR	2
#define PIC_EOI		0x20	/* non-specific end of interrupt */

unsigned long kstat_irqs[NR_IRQS];
unsigned long spurious_irqs;

void timer_interrupt(struct pt_regs *regs);

void init_IRQ(void)
{
	outb(0x11, PIC_MASTER_CMD);	/* ICW1: edge, cascade, ICW4 follows */
	outb(FIRST_EXTERNAL_VECTOR, PIC_MASTER_IMR);	/* ICW2: vectors 32-39 */
	outb(1 << PIC_CASCADE_IR, PIC_MASTER_IMR);	/* ICW3: slave on IR2 */
	outb(0x01, PIC_MASTER_IMR);	/* ICW4: 8086 mode, normal EOI */

	outb(0x11, PIC_SLAVE_CMD);
	outb(FIRST_EXTERNAL_VECTOR + 8, PIC_SLAVE_IMR);	/* vectors 40-47 */
	outb(PIC_CASCADE_IR, PIC_SLAVE_IMR);	/* its cascade identity */
	outb(0x01, PIC_SLAVE_IMR);

	/* OCW1: everything masked but IRQ0 (timer) and IRQ2 (cascade). */
	outb(0xfa, PIC_MASTER_IMR);
	outb(0xff, PIC_SLAVE_IMR);
}

static inline void irq_enter(void)
{
	current_thread_info()->preempt_count += HARDIRQ_OFFSET;
	boot_cpu_pda.irqcount++;
}

static inline void irq_exit(void)
{
	boot_cpu_pda.irqcount--;
	current_thread_info()->preempt_count -= HARDIRQ_OFFSET;
}

/*
 * Called by common_interrupt with interrupts off.  The EOI goes out before we
 * return: the return path may switch to another task for a long time.
 */
void do_IRQ(struct pt_regs *regs)
{
	unsigned int irq = ~regs->orig_rax - FIRST_EXTERNAL_VECTOR;

	irq_enter();
	if (irq < NR_IRQS)
		kstat_irqs[irq]++;
	if (irq == 0)
		timer_interrupt(regs);
	else
		spurious_irqs++;
	if (irq >= 8 && irq < NR_IRQS)
		outb(PIC_EOI, PIC_SLAVE_CMD);
	outb(PIC_EOI, PIC_MASTER_CMD);
	irq_exit();
}
