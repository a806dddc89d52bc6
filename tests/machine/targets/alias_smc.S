/*
 * Code rewritten through a second, non-executable mapping of its page (what a JIT
 * does with a W^X double mapping, and what a kernel does to a program's page-cache
 * page through its direct map).  tests/machine/test_code_pages.py maps the page of
 * smc_target a second time, writable and NX, at smc_target + delta.
 *
 * smc_alias(delta): store through the alias to a byte of that page that holds no code
 * (so the alias's TLB entry is written once before any code of the page is
 * translated), call smc_target (translated now: returns 1), rewrite its immediate
 * through the alias to 2, call it again (translated again), rewrite it to 3, call it a
 * third time.  Returns the three results, a byte each: 0x030201 on a CPU (and QEMU)
 * that sees every write; a stale translation repeats an older value.
 */
	.text
	.globl	smc_alias
	.type	smc_alias, @function
smc_alias:
	pushq	%rbx
	leaq	smc_scratch(%rip), %rax
	movb	$1, (%rax,%rdi)
	call	smc_target
	movl	%eax, %ebx
	leaq	smc_imm(%rip), %rax
	movb	$2, (%rax,%rdi)
	call	smc_target
	shll	$8, %eax
	orl	%eax, %ebx
	leaq	smc_imm(%rip), %rax
	movb	$3, (%rax,%rdi)
	call	smc_target
	shll	$16, %eax
	orl	%ebx, %eax
	popq	%rbx
	ret
	.size	smc_alias, . - smc_alias

	.balign	4096		/* a page of its own: no code of it has run before */
	.globl	smc_target
	.type	smc_target, @function
smc_target:
	.byte	0xb8		/* mov $1, %eax */
smc_imm:
	.long	1
	ret
	.size	smc_target, . - smc_target
	.balign	2048
smc_scratch:
	.byte	0
	.balign	4096

/* Page tables for the alias (filled in by the test): a level-3 and a level-2 table. */
	.bss
	.balign	4096
	.globl	smc_pdpt
smc_pdpt:
	.fill	512, 8, 0
	.globl	smc_pd
smc_pd:
	.fill	512, 8, 0
