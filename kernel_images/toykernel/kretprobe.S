/*
 * kretprobe.S - the return-probe trampoline, as in the 2005 x86_64 kprobes code.
 *
 * The host replaces a probed function's return address with this address and
 * keeps a kprobe on it; the kprobe's handler does all the work and never lets the
 * nop run.  Nothing in the guest itself jumps here.
 */
	.text
	.globl	kretprobe_trampoline
	.type	kretprobe_trampoline, @function
kretprobe_trampoline:
	nop
	.size	kretprobe_trampoline, 1
