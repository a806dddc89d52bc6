/*
 * ret_targets: functions for kpemu's return-probe tests, in assembly so the shapes are
 * exact: linear recursion, nested calls, a tail call, and call sites with labels right
 * after them (the return addresses the tests expect).
 */
	.text

/* rdepth(n): n frames deep, returns n. */
	.globl rdepth
rdepth:
	push %rbp
	mov %rsp, %rbp
	test %rdi, %rdi
	jz 1f
	dec %rdi
	call rdepth
	.globl rdepth_ret
rdepth_ret:
	inc %rax
	pop %rbp
	ret
1:	xor %eax, %eax
	pop %rbp
	ret

/* call_outer(n) -> outer(n) -> middle(n) -> inner(n): returns 2n + 10 + 1. */
	.globl call_outer
call_outer:
	push %rbp
	mov %rsp, %rbp
	call outer
	.globl call_outer_ret
call_outer_ret:
	pop %rbp
	ret

	.globl outer
outer:
	push %rbp
	mov %rsp, %rbp
	call middle
	.globl outer_ret
outer_ret:
	add $1, %rax
	pop %rbp
	ret

	.globl middle
middle:
	push %rbp
	mov %rsp, %rbp
	call inner
	.globl middle_ret
middle_ret:
	add $10, %rax
	pop %rbp
	ret

	.globl inner
inner:
	push %rbp
	mov %rsp, %rbp
	lea (%rdi,%rdi), %rax
	pop %rbp
	ret

/* call_tail(n) -> tail_f(n), which calls inner(n) first and then jumps to
   tail_g(n + 1): returns n + 101. */
	.globl call_tail
call_tail:
	push %rbp
	mov %rsp, %rbp
	call tail_f
	.globl call_tail_ret
call_tail_ret:
	pop %rbp
	ret

	.globl tail_f
tail_f:
	push %rbp
	mov %rsp, %rbp
	push %rdi
	push %rdi
	call inner
	.globl tail_f_inner_ret
tail_f_inner_ret:
	pop %rdi
	pop %rdi
	pop %rbp
	add $1, %rdi
	jmp tail_g

	.globl tail_g
tail_g:
	push %rbp
	mov %rsp, %rbp
	lea 100(%rdi), %rax
	pop %rbp
	ret
