/*
 * page.h - the memory layout and CPU constants shared by C and assembly.
 *
 * Only plain numbers here: head.S and entry.S include this file too.
 */
#ifndef _TOY_PAGE_H
#define _TOY_PAGE_H

/* The kernel is linked at __START_KERNEL_map + physical address (1 GiB mapped). */
#define __START_KERNEL_map	0xffffffff80000000
#define __PHYSICAL_START	0x1000000

#define PAGE_SHIFT		12
#define PAGE_SIZE		4096
#define PMD_SHIFT		21		/* one level-2 entry maps 2 MiB */
#define PTRS_PER_TABLE		512

/* Page-table entry bits. */
#define _PAGE_PRESENT		0x001
#define _PAGE_RW		0x002
#define _PAGE_PSE		0x080		/* 2 MiB page in a level-2 entry */
#define _KERNPG_TABLE		(_PAGE_PRESENT | _PAGE_RW)
#define __PAGE_KERNEL_LARGE	(_PAGE_PRESENT | _PAGE_RW | _PAGE_PSE)	/* 0x83 */

/* Selectors of the kernel's GDT (head.S). */
#define __KERNEL_CS		0x08
#define __KERNEL_DS		0x10

/* Control registers and MSRs the entry code touches. */
#define X86_CR0_PE		0x00000001
#define X86_CR0_PG		0x80000000
#define X86_CR4_PAE		0x00000020
#define MSR_EFER		0xc0000080
#define EFER_LME		0x00000100
#define MSR_GS_BASE		0xc0000101

#define X86_EFLAGS_IF		0x00000200
#define X86_EFLAGS_IF_BIT	9

#ifndef __ASSEMBLY__
#define __pa(x)	((unsigned long)(x) - __START_KERNEL_map)
#define __va(x)	((void *)((unsigned long)(x) + __START_KERNEL_map))
#endif

#endif /* _TOY_PAGE_H */
