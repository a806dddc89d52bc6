/*
 * entry.S - every way into the kernel from a trap, an interrupt or a system call,
 * and the context switch.
 *
 * Trap, IRQ and system-call entry live in .kprobes.text (the kprobes blacklist):
 * they run while a kprobe trap is in progress.  switch_to and ret_from_fork are
 * ordinary kernel text and may be probed.
 *
 * Every entry builds a struct pt_regs (include/ptrace.h) on the current kernel
 * stack -- there is no separate interrupt stack, so a preempted task keeps its
 * interrupt frame on its own stack until it runs again.
 */
#include "page.h"
#include "asm-offsets.h"

#define ENOSYS	38

/* The push order below is the reverse of struct pt_regs; make sure they agree. */
	.if PTREGS_r15 != 0 || PTREGS_rbx != 5*8 || PTREGS_rax != 10*8 || PTREGS_rdi != 14*8
	.error "struct pt_regs does not match entry.S"
	.endif
	.if PTREGS_orig_rax != 15*8 || PTREGS_rip != 16*8 || PTREGS_ss != 20*8 || PTREGS_SIZE != 21*8
	.error "struct pt_regs does not match entry.S"
	.endif

/* After orig_rax, %rdi and %rsi have been pushed: the rest of pt_regs. */
	.macro SAVE_REST
	pushq	%rdx
	pushq	%rcx
	pushq	%rax
	pushq	%r8
	pushq	%r9
	pushq	%r10
	pushq	%r11
	pushq	%rbx
	pushq	%rbp
	pushq	%r12
	pushq	%r13
	pushq	%r14
	pushq	%r15
	.endm

/* Pop all of pt_regs and drop orig_rax: %rsp is left on the CPU's frame. */
	.macro RESTORE_ALL
	popq	%r15
	popq	%r14
	popq	%r13
	popq	%r12
	popq	%rbp
	popq	%rbx
	popq	%r11
	popq	%r10
	popq	%r9
	popq	%r8
	popq	%rax
	popq	%rcx
	popq	%rdx
	popq	%rsi
	popq	%rdi
	addq	$8, %rsp
	.endm

	.macro ENTRY name
	.globl	\name
	.type	\name, @function
\name:
	.endm

	.macro END name
	.size	\name, . - \name
	.endm

	.section .kprobes.text, "ax"

/* ---------------------------------------------------------------------------- */
/*
 * Exceptions 0-31, one entry each.  Those without a CPU error code push -1 in its
 * place so every frame has the same shape.  The entry then saves %rdi/%rsi and
 * passes the C handler (in %rdi) and the vector (in %esi) to exception_common,
 * which calls handler(regs, vector).
 */
	.macro TRAP name, vector, handler, errcode=0
ENTRY \name
	.if \errcode == 0
	pushq	$-1
	.endif
	pushq	%rdi
	pushq	%rsi
	movl	$\vector, %esi
	leaq	\handler(%rip), %rdi
	jmp	exception_common
END \name
	.endm

	TRAP divide_error,		0,  do_trap
	TRAP debug,			1,  do_trap
	TRAP nmi,			2,  do_trap
	TRAP int3,			3,  do_int3
	TRAP overflow,			4,  do_trap
	TRAP bounds,			5,  do_trap
	TRAP invalid_op,		6,  do_trap
	TRAP device_not_available,	7,  do_trap
	TRAP double_fault,		8,  do_trap, 1
	TRAP coprocessor_segment_overrun, 9, do_trap
	TRAP invalid_TSS,		10, do_trap, 1
	TRAP segment_not_present,	11, do_trap, 1
	TRAP stack_segment,		12, do_trap, 1
	TRAP general_protection,	13, do_trap, 1
	TRAP page_fault,		14, do_trap, 1
	TRAP spurious_interrupt_bug,	15, do_trap
	TRAP coprocessor_error,		16, do_trap
	TRAP alignment_check,		17, do_trap, 1
	TRAP machine_check,		18, do_trap
	TRAP simd_coprocessor_error,	19, do_trap
	TRAP virtualization_exception,	20, do_trap
	TRAP control_protection,	21, do_trap, 1
	TRAP reserved_trap_22,		22, do_trap
	TRAP reserved_trap_23,		23, do_trap
	TRAP reserved_trap_24,		24, do_trap
	TRAP reserved_trap_25,		25, do_trap
	TRAP reserved_trap_26,		26, do_trap
	TRAP reserved_trap_27,		27, do_trap
	TRAP hypervisor_injection,	28, do_trap
	TRAP vmm_communication,		29, do_trap, 1
	TRAP security_exception,	30, do_trap, 1
	TRAP reserved_trap_31,		31, do_trap

/* Any vector nothing was installed for: we cannot tell which, so say -1. */
	TRAP unknown_interrupt,		-1, do_trap

ENTRY exception_common
	SAVE_REST
	cld
	movq	%rdi, %rax			/* the C handler */
	movq	%rsp, %rdi			/* struct pt_regs * */
	call	*%rax				/* handler(regs, vector) */
	RESTORE_ALL
	iretq
END exception_common

/* ---------------------------------------------------------------------------- */
/*
 * Hardware interrupts (vectors 32-47 after the PIC remap).  orig_rax = ~vector,
 * as Linux does, so do_IRQ can tell which line fired.
 */
	.macro IRQ_ENTRY irq
ENTRY IRQ\irq\()_interrupt
	pushq	$~(32 + \irq)
	jmp	common_interrupt
END IRQ\irq\()_interrupt
	.endm

	.irp	irq, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15
	IRQ_ENTRY \irq
	.endr

ENTRY common_interrupt
	pushq	%rdi
	pushq	%rsi
	SAVE_REST
	cld
	movq	%rsp, %rdi
	call	do_IRQ				/* do_IRQ(regs); sends the EOI */
END common_interrupt				/* falls through */

	/*
	 * ret_from_intr: interrupts are off.  If the interrupted code could be
	 * preempted (IF was set, preempt_count is 0) and the timer asked for a
	 * reschedule, switch tasks right here, with the interrupted task's pt_regs
	 * left on its stack; it resumes below, later, and iretq's back to where it
	 * was -- in the middle of whatever function it was running.
	 */
ENTRY ret_from_intr
	movq	%rsp, %rcx
	andq	$~(THREAD_SIZE - 1), %rcx	/* current_thread_info() */
	cmpl	$0, TI_preempt_count(%rcx)
	jne	restore_all
	testq	$(1 << TIF_NEED_RESCHED), TI_flags(%rcx)
	jz	restore_all
	btq	$X86_EFLAGS_IF_BIT, PTREGS_eflags(%rsp)
	jnc	restore_all
	call	preempt_schedule_irq		/* returns with interrupts still off */
	jmp	ret_from_intr

restore_all:
	RESTORE_ALL
	iretq
END ret_from_intr

/* ---------------------------------------------------------------------------- */
/*
 * int $0x80: %rax = number, %rdi/%rsi/%rdx = arguments, result in %rax.
 * The gate clears IF; a system call may take long, so interrupts go back on as
 * soon as the frame is saved (the caller had them on).  The call is an indirect
 * call through sys_call_table.
 */
ENTRY system_call
	pushq	%rax				/* orig_rax: the system call number */
	pushq	%rdi
	pushq	%rsi
	SAVE_REST
	cld
	sti
	cmpq	$NR_syscalls, %rax
	jae	badsys
	call	*sys_call_table(, %rax, 8)	/* arguments still in %rdi, %rsi, %rdx */
	movq	%rax, PTREGS_rax(%rsp)
ret_from_sys_call:
	cli
	jmp	ret_from_intr			/* a system call return is a preemption point */
badsys:
	movq	$-ENOSYS, PTREGS_rax(%rsp)
	jmp	ret_from_sys_call
END system_call

/* ---------------------------------------------------------------------------- */
	.section .rodata
	.balign	8
/* Stub addresses for trap_init(). */
	.globl	exception_entries
	.type	exception_entries, @object
exception_entries:
	.quad	divide_error, debug, nmi, int3, overflow, bounds, invalid_op
	.quad	device_not_available, double_fault, coprocessor_segment_overrun
	.quad	invalid_TSS, segment_not_present, stack_segment, general_protection
	.quad	page_fault, spurious_interrupt_bug, coprocessor_error, alignment_check
	.quad	machine_check, simd_coprocessor_error, virtualization_exception
	.quad	control_protection, reserved_trap_22, reserved_trap_23, reserved_trap_24
	.quad	reserved_trap_25, reserved_trap_26, reserved_trap_27
	.quad	hypervisor_injection, vmm_communication, security_exception
	.quad	reserved_trap_31
	.size	exception_entries, . - exception_entries

	.globl	interrupt
	.type	interrupt, @object
interrupt:
	.irp	irq, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15
	.quad	IRQ\irq\()_interrupt
	.endr
	.size	interrupt, . - interrupt

/* ---------------------------------------------------------------------------- */
	.text

/*
 * struct task_struct *switch_to(struct task_struct *prev, struct task_struct *next)
 *
 * Called by schedule() with interrupts off.  Saves the callee-saved registers on
 * prev's stack and the stack pointer in prev->thread.rsp, then does the reverse
 * for next.  The `ret` returns into wherever next last called switch_to -- or,
 * the first time, into ret_from_fork (see do_fork's initial frame).  The value
 * is the task we came from (%rdi is not touched after the stack switch).
 */
ENTRY switch_to
	pushq	%rbp
	pushq	%rbx
	pushq	%r12
	pushq	%r13
	pushq	%r14
	pushq	%r15
	movq	%rsp, TASK_thread_rsp(%rdi)
	movq	TASK_thread_rsp(%rsi), %rsp
	movq	%rsi, %gs:PDA_pcurrent
	popq	%r15
	popq	%r14
	popq	%r13
	popq	%r12
	popq	%rbx
	popq	%rbp
	movq	%rdi, %rax
	ret
END switch_to

/*
 * A new task's first instructions.  do_fork left the function in %rbx and its
 * argument in %r12; schedule() switched here with interrupts off.  If the
 * function returns, its value is the exit code.
 */
ENTRY ret_from_fork
	sti
	movq	%r12, %rdi
	call	*%rbx
	movq	%rax, %rdi
	call	do_exit				/* never returns */
	ud2
END ret_from_fork
