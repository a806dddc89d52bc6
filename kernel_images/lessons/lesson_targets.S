/*
 * lesson_targets: the code the `fixups` teaching demo probes, one small function per
 * kind of instruction resume_execution() treats differently.  The demo probes the one
 * instruction of the scene's kind in each function (it finds it by decoding the
 * function); each function returns a value the demo compares with the unprobed call.  Assembly, so that exactly the instruction of the scene is there.
 */
	.text

/* mov: nothing depends on where it runs; returns rdi + 1. */
	.globl lt_mov
	.type lt_mov, @function
lt_mov:
	mov %rdi, %rax
	add $1, %rax
	ret
	.size lt_mov, . - lt_mov

/* rip-relative load: returns lt_value. */
	.globl lt_riprel
	.type lt_riprel, @function
lt_riprel:
	mov lt_value(%rip), %rax
	ret
	.size lt_riprel, . - lt_riprel

/* jcc: returns 1 if rdi < rsi (the jl taken), else 2. */
	.globl lt_jcc
	.type lt_jcc, @function
lt_jcc:
	cmp %rsi, %rdi
	jl 1f
	mov $2, %eax
	ret
1:	mov $1, %eax
	ret
	.size lt_jcc, . - lt_jcc

/* call rel32: returns the return address the callee found on the stack. */
	.globl lt_call
	.type lt_call, @function
lt_call:
	push %rbp
	mov %rsp, %rbp
	call lt_callee
	pop %rbp
	ret
	.size lt_call, . - lt_call

/* the callee of both calls: returns its own return address. */
	.globl lt_callee
	.type lt_callee, @function
lt_callee:
	mov (%rsp), %rax
	ret
	.size lt_callee, . - lt_callee

/* ret: lt_ret calls lt_ret_leaf, whose ret is probed; returns 7. */
	.globl lt_ret
	.type lt_ret, @function
lt_ret:
	push %rbp
	mov %rsp, %rbp
	call lt_ret_leaf
	pop %rbp
	ret
	.size lt_ret, . - lt_ret

	.globl lt_ret_leaf
	.type lt_ret_leaf, @function
lt_ret_leaf:
	mov $7, %eax
	ret
	.size lt_ret_leaf, . - lt_ret_leaf

/* pushf with IF on: returns the pushed image's TF and IF bits (0x200 unprobed). */
	.globl lt_pushf
	.type lt_pushf, @function
lt_pushf:
	sti
	pushf
	pop %rax
	cli
	and $0x300, %rax
	ret
	.size lt_pushf, . - lt_pushf

/* cli with IF on: returns IF just after it (0 unprobed). */
	.globl lt_cli
	.type lt_cli, @function
lt_cli:
	sti
	cli
	pushf
	pop %rax
	and $0x200, %rax
	ret
	.size lt_cli, . - lt_cli

/* sti with IF off: returns IF just after it (0x200 unprobed). */
	.globl lt_sti
	.type lt_sti, @function
lt_sti:
	cli
	sti
	pushf
	pop %rax
	cli
	and $0x200, %rax
	ret
	.size lt_sti, . - lt_sti

/* call *%rax: returns the return address lt_callee found on the stack. */
	.globl lt_call_indirect
	.type lt_call_indirect, @function
lt_call_indirect:
	push %rbp
	mov %rsp, %rbp
	lea lt_callee(%rip), %rax
	call *%rax
	pop %rbp
	ret
	.size lt_call_indirect, . - lt_call_indirect

	.data
	.balign 8
	.globl lt_value
	.type lt_value, @object
lt_value:
	.quad 0x1122334455667788
	.size lt_value, . - lt_value

	.section .note.GNU-stack, "", @progbits
