/*
 * ptrace.h - struct pt_regs, the frame every trap, interrupt and system call
 * entry builds on the kernel stack (Linux 2.6 x86_64 order).
 *
 * The last five words are what the CPU pushes; orig_rax is the CPU's error code,
 * -1 for traps without one, ~vector for IRQs, the syscall number for int $0x80.
 * entry.S pushes the rest in exactly the reverse of this order.
 */
#ifndef _TOY_PTRACE_H
#define _TOY_PTRACE_H

struct pt_regs {
	unsigned long r15;
	unsigned long r14;
	unsigned long r13;
	unsigned long r12;
	unsigned long rbp;
	unsigned long rbx;
	unsigned long r11;
	unsigned long r10;
	unsigned long r9;
	unsigned long r8;
	unsigned long rax;
	unsigned long rcx;
	unsigned long rdx;
	unsigned long rsi;
	unsigned long rdi;
	unsigned long orig_rax;
	/* pushed by the CPU */
	unsigned long rip;
	unsigned long cs;
	unsigned long eflags;
	unsigned long rsp;
	unsigned long ss;
};

#endif /* _TOY_PTRACE_H */
