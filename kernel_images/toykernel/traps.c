/*
 * traps.c - the IDT, and what the kernel does with exceptions.
 *
 * int3 prints where it happened and carries on (under kpemu the host handles its
 * own breakpoints before the guest ever sees them).  Every other exception is a
 * kernel bug here: die() prints an oops line and powers the machine off.
 */
#include "types.h"
#include "desc.h"
#include "io.h"
#include "irqflags.h"
#include "kernel.h"
#include "page.h"
#include "ptrace.h"
#include "sched.h"

struct gate_struct idt_table[IDT_ENTRIES] __aligned(PAGE_SIZE);

/* entry.S */
extern const unsigned long exception_entries[32];
extern const unsigned long interrupt[NR_IRQS];
extern char unknown_interrupt[], system_call[];

static const char *const trap_names[32] = {
	"divide error", "debug", "nmi", "int3", "overflow", "bounds",
	"invalid opcode", "device not available", "double fault",
	"coprocessor segment overrun", "invalid TSS", "segment not present",
	"stack segment", "general protection fault", "page fault",
	"spurious interrupt bug", "coprocessor error", "alignment check",
	"machine check", "SIMD coprocessor error", "virtualization exception",
	"control protection", "reserved", "reserved", "reserved", "reserved",
	"reserved", "reserved", "hypervisor injection", "VMM communication",
	"security exception", "reserved",
};

/*
 * Every gate is a 64-bit interrupt gate (IF cleared on entry), as Linux x86_64
 * does; dpl 3 only matters for int3 and int $0x80, which are meant to be raised
 * by software.
 */
static void set_gate(int vector, unsigned long addr, int dpl)
{
	struct gate_struct *g = &idt_table[vector];

	g->offset_low = addr & 0xffff;
	g->segment = __KERNEL_CS;
	g->ist = 0;
	g->type = 0x80 | (dpl << 5) | GATE_INTERRUPT;	/* present */
	g->offset_middle = (addr >> 16) & 0xffff;
	g->offset_high = addr >> 32;
	g->zero1 = 0;
}

void trap_init(void)
{
	int v;

	for (v = 0; v < IDT_ENTRIES; v++) {
		unsigned long addr = (unsigned long)unknown_interrupt;
		int dpl = 0;

		if (v < 32)
			addr = exception_entries[v];
		else if (v < FIRST_EXTERNAL_VECTOR + NR_IRQS)
			addr = interrupt[v - FIRST_EXTERNAL_VECTOR];
		else if (v == SYSCALL_VECTOR)
			addr = (unsigned long)system_call;
		if (v == 3 || v == SYSCALL_VECTOR)
			dpl = 3;
		set_gate(v, addr, dpl);
	}
}

void __kprobes __noreturn die(const char *str, struct pt_regs *regs, long vector)
{
	struct task_struct *tsk = current;

	local_irq_disable();
	printk("Oops: %s: vector %ld error %lx rip %lx rsp %lx eflags %lx in %s[%d]\n",
	       str, vector, regs->orig_rax, regs->rip, regs->rsp, regs->eflags,
	       tsk->comm, tsk->pid);
	printk("rax %lx rbx %lx rcx %lx rdx %lx rsi %lx rdi %lx rbp %lx\n",
	       regs->rax, regs->rbx, regs->rcx, regs->rdx, regs->rsi, regs->rdi,
	       regs->rbp);
	machine_power_off(0x7f);
}

/* The handler of every exception but int3 (entry.S passes the vector). */
void __kprobes do_trap(struct pt_regs *regs, int vector)
{
	const char *name = "unexpected interrupt";

	if (vector >= 0 && vector < 32)
		name = trap_names[vector];
	die(name, regs, vector);
}

/*
 * A breakpoint nobody claimed.  regs->rip is the trap's rip, i.e. the address
 * after the int3; returning resumes there.
 */
void __kprobes do_int3(struct pt_regs *regs, int vector)
{
	printk("int3 at %lx\n", regs->rip);
}
