/*
 * kpemu.h - the guest side of the kpemu hypercall port and the power-off device.
 *
 * docs/guest-host-contract.md: kpemu-only notifications are 32-bit writes of the
 * hypercall number to port 0x500.  A real PC (and QEMU) has nothing there and
 * drops the write, so the same image runs everywhere.
 */
#ifndef _TOY_KPEMU_H
#define _TOY_KPEMU_H

#define HC_PORT			0x500
#define HC_KPROBE_FLUSH_TASK	1	/* %rdi = task, %rsi = call site */
#define HC_BOOT_DONE		2	/* init is about to start the workload */

#define DEBUG_EXIT_PORT		0xf4	/* isa-debug-exit: power off with a status */

#endif /* _TOY_KPEMU_H */
