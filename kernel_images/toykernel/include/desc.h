/*
 * desc.h - 64-bit IDT gates.
 */
#ifndef _TOY_DESC_H
#define _TOY_DESC_H

#include "types.h"

#define IDT_ENTRIES		256
#define FIRST_EXTERNAL_VECTOR	0x20	/* IRQ0 after the PIC remap */
#define NR_IRQS			16
#define SYSCALL_VECTOR		0x80

#define GATE_INTERRUPT		0xe	/* clears IF on entry */

struct gate_struct {
	u16	offset_low;
	u16	segment;
	u8	ist;		/* 0: stay on the current stack */
	u8	type;		/* P | DPL | type */
	u16	offset_middle;
	u32	offset_high;
	u32	zero1;
} __attribute__((__packed__));

extern struct gate_struct idt_table[IDT_ENTRIES];

#endif /* _TOY_DESC_H */
