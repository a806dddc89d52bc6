/*
 * resume_targets: one small function per resume_execution() row, for kpemu's tests.
 * Each test probes the instruction at the label named in its comment and compares the
 * result of the probed call with the unprobed one.  Written in assembly so the exact
 * instruction under test is there (gcc would not emit ret imm16, loop or call *%reg).
 */
	.text

/* call rel32: returns the address the callee saw as its return address. */
	.globl t_call_rel32
t_call_rel32:
	push %rbp
	mov %rsp, %rbp
	.globl t_call_rel32_insn
t_call_rel32_insn:
	call ret_addr_of_caller
	lea after_call(%rip), %rdx
	sub %rdx, %rax		/* 0 when the pushed return address was right */
	pop %rbp
	ret
after_call = t_call_rel32_insn + 5
ret_addr_of_caller:
	mov (%rsp), %rax
	ret

/* ret imm16: the callee pops its 2 stack arguments; returns their sum + rsp delta. */
	.globl t_ret_imm16
t_ret_imm16:
	push %rbp
	mov %rsp, %rbp
	mov %rsp, %r8
	push %rdi
	push %rsi
	call sum_and_pop
	sub %rsp, %r8		/* 0 when ret $16 popped both arguments */
	add %r8, %rax
	pop %rbp
	ret
sum_and_pop:
	mov 8(%rsp), %rax
	add 16(%rsp), %rax
	.globl t_ret_imm16_insn
t_ret_imm16_insn:
	ret $16

/* jcc taken and not taken: returns 1 if rdi < rsi else 2. */
	.globl t_jcc
t_jcc:
	cmp %rsi, %rdi
	.globl t_jcc_insn
t_jcc_insn:
	jl 1f
	mov $2, %eax
	ret
1:	mov $1, %eax
	ret

/* loop: sums rcx down to 1 (rdi = count). */
	.globl t_loop
t_loop:
	mov %rdi, %rcx
	xor %eax, %eax
1:	add %rcx, %rax
	.globl t_loop_insn
t_loop_insn:
	loop 1b
	ret

/* pushf image: with IF on, returns the pushed flags' TF|IF bits (0x200 expected). */
	.globl t_pushf
t_pushf:
	sti
	.globl t_pushf_insn
t_pushf_insn:
	pushf
	pop %rax
	cli
	and $0x300, %rax
	ret

/* cli / sti / popf: the IF the instruction itself sets survives the single-step. */
	.globl t_cli
t_cli:
	sti
	.globl t_cli_insn
t_cli_insn:
	cli
	pushf
	pop %rax
	and $0x300, %rax	/* 0 expected */
	ret

	.globl t_sti
t_sti:
	cli
	.globl t_sti_insn
t_sti_insn:
	sti
	pushf
	pop %rax
	cli
	and $0x300, %rax	/* 0x200 expected */
	ret

	.globl t_popf
t_popf:
	push %rdi		/* the flags image to load */
	.globl t_popf_insn
t_popf_insn:
	popf
	pushf
	pop %rax
	cli
	and $0x300, %rax
	ret

/* rip-relative load, store and lea. */
	.data
	.globl t_cell
t_cell:	.quad 0x1122334455667788
	.text
	.globl t_riprel_load
t_riprel_load:
	.globl t_riprel_load_insn
t_riprel_load_insn:
	mov t_cell(%rip), %rax
	ret

	.globl t_riprel_store
t_riprel_store:
	.globl t_riprel_store_insn
t_riprel_store_insn:
	mov %rdi, t_cell(%rip)
	mov t_cell(%rip), %rax
	ret

	.globl t_riprel_lea
t_riprel_lea:
	.globl t_riprel_lea_insn
t_riprel_lea_insn:
	lea t_cell(%rip), %rax
	ret

/* Indirect call and jmp, through a register and through memory. */
	.section .rodata
	.align 8
ind_targets:
	.quad ind_one
	.quad ind_two
	.text
ind_one:
	mov $111, %eax
	ret
ind_two:
	mov $222, %eax
	ret

	.globl t_call_reg
t_call_reg:
	push %rbp
	mov %rsp, %rbp
	lea ind_two(%rip), %rdx
	.globl t_call_reg_insn
t_call_reg_insn:
	call *%rdx
	add $1, %rax		/* 223: the call returned to the right place */
	pop %rbp
	ret

	.globl t_call_mem
t_call_mem:
	push %rbp
	mov %rsp, %rbp
	lea ind_targets(%rip), %rdx
	.globl t_call_mem_insn
t_call_mem_insn:
	call *(%rdx,%rdi,8)
	add $1, %rax
	pop %rbp
	ret

	.globl t_jmp_reg
t_jmp_reg:
	lea ind_one(%rip), %rdx
	.globl t_jmp_reg_insn
t_jmp_reg_insn:
	jmp *%rdx

	.globl t_jmp_mem
t_jmp_mem:
	lea ind_targets(%rip), %rdx
	.globl t_jmp_mem_insn
t_jmp_mem_insn:
	jmp *(%rdx,%rdi,8)

/* A function containing an iretq, which cannot be probed, and an explicit int3. */
	.globl t_iret
t_iret:
	.globl t_iret_insn
t_iret_insn:
	iretq

	.globl t_int3
t_int3:
	mov $7, %eax
	int3
	add $1, %rax
	ret
