/*
 * head.S - the two ways into the kernel, and the data they need before any C runs:
 * the GDT, the static page tables and the PVH note.
 *
 * startup_64 (the ELF entry, virtual): kpemu starts here directly, in long mode with
 *   CR3 = init_level4_pgt and %rsi = physical address of the boot information.
 * pvh_start_xen (32-bit, physical): QEMU's PVH entry.  It turns on long mode with the
 *   same page tables and ends up in startup_64 in exactly that state.
 */
#include "page.h"
#include "asm-offsets.h"

/* Physical address of a kernel symbol; in 32-bit code this is an R_X86_64_32 value. */
#define _pa(x)	((x) - __START_KERNEL_map)

/* ---------------------------------------------------------------------------- */
	.text
	.globl	startup_64
	.type	startup_64, @function
startup_64:
	/*
	 * Nothing may be assumed about the stack: load ours before anything can push.
	 * 16 bytes below the top keep %rsp inside the union (so rsp & ~(THREAD_SIZE-1)
	 * is always init_thread_union) and 16-byte aligned for the call below.
	 */
	leaq	init_thread_union+THREAD_SIZE-16(%rip), %rsp
	movq	%rsi, %r12			/* boot info (PA), kept for start_kernel */

	/* The time-stamp counter now: the summary line prints how far it got. */
	rdtsc
	shlq	$32, %rdx
	orq	%rdx, %rax
	movq	%rax, boot_tsc(%rip)

	/* Our own GDT; lretq is the way to reload CS in 64-bit mode. */
	lgdt	cpu_gdt_descr(%rip)
	pushq	$__KERNEL_CS
	leaq	1f(%rip), %rax
	pushq	%rax
	lretq
1:	movl	$__KERNEL_DS, %eax
	movl	%eax, %ds
	movl	%eax, %es
	movl	%eax, %ss
	xorl	%eax, %eax
	movl	%eax, %fs
	movl	%eax, %gs			/* selector 0; the base comes from the MSR */

	/* %gs:0 is the per-CPU area, whose first word is current (init_task). */
	movl	$MSR_GS_BASE, %ecx
	leaq	boot_cpu_pda(%rip), %rax
	movq	%rax, %rdx
	shrq	$32, %rdx
	wrmsr

	/* The IDT is filled in by trap_init(); it is empty until then. */
	lidt	idt_descr(%rip)

	movq	%r12, %rdi
	xorl	%ebp, %ebp			/* end of the frame-pointer chain */
	call	start_kernel
2:	cli					/* start_kernel never returns */
	hlt
	jmp	2b
	.size	startup_64, . - startup_64

/* ---------------------------------------------------------------------------- */
	.section .head.text, "ax"
	.code32
	.globl	pvh_start_xen
	.type	pvh_start_xen, @function
pvh_start_xen:
	/*
	 * QEMU enters here: 32-bit protected mode, paging off, flat segments,
	 * %ebx = physical address of the hvm_start_info.  We run at our physical
	 * address, so every absolute operand is _pa() of the symbol.  No stack needed.
	 */
	cli
	cld
	lgdt	_pa(boot_gdt_descr)
	movl	$__KERNEL_DS, %eax
	movl	%eax, %ds
	movl	%eax, %es
	movl	%eax, %ss

	movl	%cr4, %eax
	orl	$X86_CR4_PAE, %eax
	movl	%eax, %cr4
	movl	$_pa(init_level4_pgt), %eax
	movl	%eax, %cr3
	movl	$MSR_EFER, %ecx
	rdmsr
	orl	$EFER_LME, %eax
	wrmsr
	movl	%cr0, %eax
	orl	$(X86_CR0_PG | X86_CR0_PE), %eax
	movl	%eax, %cr0			/* long mode active, still 32-bit code */
	ljmp	$__KERNEL_CS, $_pa(pvh_long_mode)

	.code64
pvh_long_mode:
	/* 64-bit code at the identity-mapped physical address: go up to the kernel map. */
	movl	%ebx, %esi			/* zero-extends: %rsi = boot info PA */
	movabsq	$startup_64, %rax
	jmp	*%rax
	.size	pvh_start_xen, . - pvh_start_xen

/* ---------------------------------------------------------------------------- */
/*
 * The PVH note: QEMU's -kernel boots an ELF64 through it.  The descriptor is an
 * 8-byte field holding the 32-bit physical entry: QEMU 7.2 reads a host size_t,
 * later versions read 4 bytes, and both see the same value.
 */
	.section .note.Xen, "a", @note
	.balign	4
	.long	2f - 1f				/* namesz */
	.long	4f - 3f				/* descsz */
	.long	18				/* XEN_ELFNOTE_PHYS32_ENTRY */
1:	.asciz	"Xen"
2:	.balign	4
3:	.quad	_pa(pvh_start_xen)
4:	.balign	4

/* ---------------------------------------------------------------------------- */
	.data
	.balign	16
	.globl	cpu_gdt_table
cpu_gdt_table:
	.quad	0x0000000000000000		/* null */
	.quad	0x00af9a000000ffff		/* 0x08 __KERNEL_CS: 64-bit code */
	.quad	0x00cf92000000ffff		/* 0x10 __KERNEL_DS: flat data */
gdt_end:
	.size	cpu_gdt_table, gdt_end - cpu_gdt_table

	.balign	8
	.type	boot_gdt_descr, @object
boot_gdt_descr:					/* for the 32-bit stub: physical base */
	.word	gdt_end - cpu_gdt_table - 1
	.long	_pa(cpu_gdt_table)
	.size	boot_gdt_descr, . - boot_gdt_descr

	.balign	8
	.globl	cpu_gdt_descr
	.type	cpu_gdt_descr, @object
cpu_gdt_descr:					/* for long mode: virtual base */
	.word	gdt_end - cpu_gdt_table - 1
	.quad	cpu_gdt_table
	.size	cpu_gdt_descr, . - cpu_gdt_descr

	.balign	8
	.globl	idt_descr
	.type	idt_descr, @object
idt_descr:
	.word	256 * 16 - 1
	.quad	idt_table
	.size	idt_descr, . - idt_descr

/* ---------------------------------------------------------------------------- */
/*
 * Static page tables.  One level-2 table maps physical 0..1 GiB with 2 MiB pages;
 * it is reached twice: at VA 0 (identity, for the 32-bit stub's jump) and at
 * __START_KERNEL_map (PML4[511] -> PDPT[510]) where the kernel is linked.
 * Entries hold physical addresses, hence _pa().
 */
	.section .data..page_aligned, "aw"
	.balign	PAGE_SIZE
	.globl	init_level4_pgt
	.type	init_level4_pgt, @object
init_level4_pgt:
	.quad	_pa(level3_ident_pgt) + _KERNPG_TABLE	/* VA 0 */
	.fill	PTRS_PER_TABLE - 2, 8, 0
	.quad	_pa(level3_kernel_pgt) + _KERNPG_TABLE	/* VA 0xffffff8000000000 */
	.size	init_level4_pgt, PAGE_SIZE

	.globl	level3_ident_pgt
	.type	level3_ident_pgt, @object
level3_ident_pgt:
	.quad	_pa(level2_pgt) + _KERNPG_TABLE
	.fill	PTRS_PER_TABLE - 1, 8, 0
	.size	level3_ident_pgt, PAGE_SIZE

	.globl	level3_kernel_pgt
	.type	level3_kernel_pgt, @object
level3_kernel_pgt:
	.fill	PTRS_PER_TABLE - 2, 8, 0
	.quad	_pa(level2_pgt) + _KERNPG_TABLE		/* VA 0xffffffff80000000 */
	.quad	0
	.size	level3_kernel_pgt, PAGE_SIZE

	.globl	level2_pgt
	.type	level2_pgt, @object
level2_pgt:
	.set	.Lpmd, 0			/* .L: a counter, not a symbol in vmlinux */
	.rept	PTRS_PER_TABLE
	.quad	(.Lpmd << PMD_SHIFT) + __PAGE_KERNEL_LARGE
	.set	.Lpmd, .Lpmd + 1
	.endr
	.size	level2_pgt, PAGE_SIZE
