/*
 * asm-offsets.c - the layout of the kernel's structures, exported two ways:
 *
 *  - as absolute global symbols in vmlinux (SHN_ABS), which is how the host learns
 *    where task_struct fields, pt_regs slots and per-CPU data are;
 *  - as include/generated/asm-offsets.h (the Makefile turns this file's assembly
 *    output into #defines), which is how head.S and entry.S learn the same.
 *
 * The function is never called: it only exists so the compiler evaluates the
 * offsets.  It lives in a .discard section that the linker script throws away;
 * the absolute symbols it defines are not tied to any section and survive.
 */
#include "types.h"
#include "sched.h"
#include "ptrace.h"
#include "kpemu.h"
#include "syscalls.h"

#define DEFINE(sym, val) \
	asm volatile("\n\t.globl " #sym "\n\t.set " #sym ", %c0" : : "i" ((long)(val)))

#define OFFSET(sym, str, mem)	DEFINE(sym, offsetof(struct str, mem))

void __section(".discard.asm_offsets") asm_offsets(void)
{
	DEFINE(THREAD_SIZE, THREAD_SIZE);
	OFFSET(TI_task, thread_info, task);
	OFFSET(TI_flags, thread_info, flags);
	OFFSET(TI_preempt_count, thread_info, preempt_count);
	OFFSET(TI_cpu, thread_info, cpu);
	DEFINE(TIF_NEED_RESCHED, TIF_NEED_RESCHED);
	DEFINE(PREEMPT_ACTIVE, PREEMPT_ACTIVE);

	OFFSET(PDA_pcurrent, x8664_pda, pcurrent);
	OFFSET(PDA_irqcount, x8664_pda, irqcount);

	OFFSET(TASK_state, task_struct, state);
	OFFSET(TASK_pid, task_struct, pid);
	OFFSET(TASK_comm, task_struct, comm);
	DEFINE(TASK_COMM_LEN, TASK_COMM_LEN);
	OFFSET(TASK_thread_rsp, task_struct, thread.rsp);
	OFFSET(TASK_stack, task_struct, stack);
	OFFSET(TASK_tasks_next, task_struct, tasks_next);
	OFFSET(TASK_exit_code, task_struct, exit_code);
	OFFSET(TASK_parent, task_struct, parent);
	DEFINE(TASK_STATE_RUNNING, TASK_RUNNING);
	DEFINE(TASK_STATE_INTERRUPTIBLE, TASK_INTERRUPTIBLE);
	DEFINE(TASK_STATE_ZOMBIE, TASK_ZOMBIE);

	DEFINE(PTREGS_SIZE, sizeof(struct pt_regs));
	OFFSET(PTREGS_r15, pt_regs, r15);
	OFFSET(PTREGS_r14, pt_regs, r14);
	OFFSET(PTREGS_r13, pt_regs, r13);
	OFFSET(PTREGS_r12, pt_regs, r12);
	OFFSET(PTREGS_rbp, pt_regs, rbp);
	OFFSET(PTREGS_rbx, pt_regs, rbx);
	OFFSET(PTREGS_r11, pt_regs, r11);
	OFFSET(PTREGS_r10, pt_regs, r10);
	OFFSET(PTREGS_r9, pt_regs, r9);
	OFFSET(PTREGS_r8, pt_regs, r8);
	OFFSET(PTREGS_rax, pt_regs, rax);
	OFFSET(PTREGS_rcx, pt_regs, rcx);
	OFFSET(PTREGS_rdx, pt_regs, rdx);
	OFFSET(PTREGS_rsi, pt_regs, rsi);
	OFFSET(PTREGS_rdi, pt_regs, rdi);
	OFFSET(PTREGS_orig_rax, pt_regs, orig_rax);
	OFFSET(PTREGS_rip, pt_regs, rip);
	OFFSET(PTREGS_cs, pt_regs, cs);
	OFFSET(PTREGS_eflags, pt_regs, eflags);
	OFFSET(PTREGS_rsp, pt_regs, rsp);
	OFFSET(PTREGS_ss, pt_regs, ss);

	DEFINE(NR_syscalls, NR_syscalls);

	DEFINE(HC_PORT, HC_PORT);
	DEFINE(HC_KPROBE_FLUSH_TASK, HC_KPROBE_FLUSH_TASK);
	DEFINE(HC_BOOT_DONE, HC_BOOT_DONE);
}
