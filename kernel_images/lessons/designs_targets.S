/*
 * designs_targets: the code the designs demo (kprobes/demos/lessons/designs.py) probes to
 * show where kretprobe design (a), instances keyed by the return slot's address, breaks
 * and design (b), keyed by current, does not.  Assembly, so the shapes are exact.
 *
 *   designs_irq(n)     runs designs_irq_handler(n) on an interrupt stack of its own
 *   designs_tail(n)    calls designs_f(n), which tail-jumps to designs_g
 *
 * Built by kernel_images/lessons/Makefile (make images); the .o is committed.
 */
	.text

/*
 * designs_irq(n): switch to designs_irq_stack the way x86_64's interrupt entry switches
 * to the per-CPU IRQ stack (the interrupted rsp kept on the new stack), call the handler
 * there, switch back.  Returns designs_irq_handler(n).
 */
	.globl designs_irq
designs_irq:
	push %rbp
	mov %rsp, %rbp
	mov %rsp, %rdx
	lea designs_irq_stack_end-64(%rip), %rsp
	push %rdx
	call designs_irq_handler
	.globl designs_irq_ret
designs_irq_ret:
	pop %rsp
	pop %rbp
	ret

/*
 * designs_irq_handler(n): an interrupt handler with a 4 KiB scratch buffer on its stack,
 * which it fills with n; returns n + 1.  On the IRQ stack the buffer covers the word that
 * masking the return slot's address to THREAD_SIZE points at.
 */
	.globl designs_irq_handler
designs_irq_handler:
	push %rbp
	mov %rsp, %rbp
	sub $4096, %rsp
	mov %rdi, %rax
	mov %rsp, %rdi
	mov $512, %ecx
	cld
	rep stosq
	lea 1(%rax), %rax
	leave
	ret

/* designs_tail(n) -> designs_f(n): returns designs_g(n + designs_leaf(n)) = 3n + 7. */
	.globl designs_tail
designs_tail:
	push %rbp
	mov %rsp, %rbp
	call designs_f
	.globl designs_tail_ret
designs_tail_ret:
	pop %rbp
	ret

/* designs_f(n): calls designs_leaf(n) first, then tail-jumps to designs_g with its own
   frame gone, so designs_g returns straight to designs_tail. */
	.globl designs_f
designs_f:
	push %rbp
	mov %rsp, %rbp
	push %rdi
	sub $8, %rsp
	call designs_leaf
	.globl designs_f_leaf_ret
designs_f_leaf_ret:
	add $8, %rsp
	pop %rdi
	add %rax, %rdi
	pop %rbp
	jmp designs_g

/* designs_leaf(n): 2n, no frame. */
	.globl designs_leaf
designs_leaf:
	lea (%rdi,%rdi), %rax
	ret

/* designs_g(n): n + 7. */
	.globl designs_g
designs_g:
	push %rbp
	mov %rsp, %rbp
	lea 7(%rdi), %rax
	pop %rbp
	ret

/*
 * The interrupt stack: 16 KiB, page aligned but 4 KiB past a THREAD_SIZE (8 KiB)
 * boundary -- x86_64 only page-aligns its per-CPU IRQ stacks -- and with no thread_info
 * anywhere in it.
 */
	.bss
	.balign 8192
designs_irq_below:
	.skip 4096
	.globl designs_irq_stack
designs_irq_stack:
	.skip 16384
	.globl designs_irq_stack_end
designs_irq_stack_end:

	.section .note.GNU-stack,"",@progbits
