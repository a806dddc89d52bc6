/*
 * The C contract between emu's extension (emu/_fastpath.c) and C code of the
 * layers above it (kprobes/arch/x86_64/trap.c): what one may call or touch of the
 * other without a Python call in between.
 *
 *   struct kpemu_icount   the guest clock's counter (Python face: emu/clock.py,
 *                         ctypes mirror: _ICount in emu/engine.py); C code that
 *                         reads `executed` inside emu_start calls sync() first
 *                         when `block` is set (see the struct);
 *   struct kpemu_trap_handler
 *                         a trap handler written in C (in the engine's trap
 *                         table as an emu._fastpath.CTrapHandler);
 *   struct kpemu_api      the pt_regs view's constructor and trap_return() for
 *                         C callers, the reading of a Python trap handler's
 *                         result, and native register and guest-memory access,
 *                         exported as the capsule KPEMU_API_CAPSULE;
 *   X86_EFLAGS_*          the EFLAGS bits the host changes, defined here once
 *                         (emu._fastpath exports them to Python, emu.cpu re-exports).
 */
#ifndef KPEMU_H
#define KPEMU_H

#include <Python.h>
#include <stdint.h>

typedef int (*uc_stop_fn)(void *uc);

#define X86_EFLAGS_TF 0x00000100ULL	/* trap flag: #DB after the next instruction */
#define X86_EFLAGS_IF 0x00000200ULL	/* interrupts enabled */
#define X86_EFLAGS_NT 0x00004000ULL	/* nested task */
#define X86_EFLAGS_RF 0x00010000ULL	/* resume flag */

struct kpemu_icount {
	uint64_t executed;	/* guest instructions executed (the clock) */
	uint64_t deadline;	/* stop before an instruction once executed >= deadline */
	uc_stop_fn emu_stop;	/* uc_emu_stop, filled in by the host */
	uint64_t stops;		/* how many stops the hook requested */
	uint64_t hidden;	/* instructions run for the host and taken back out */
	/* The block clock (emu/_fastpath.c, part 1): a block counted whole is added
	 * to `executed` at the next block's start; until then `executed` lags. */
	uint64_t pending;	/* instructions of `block` not yet in `executed` */
	void *block;		/* the block running, counted whole (NULL: none) */
	uint64_t precise;	/* the running block is counted instruction by instruction */
	void *clock;		/* the BlockClock's state */
	/* Make `executed` exact at the instruction at RIP (counting it), from a
	 * hook inside emu_start: call it when `block` is not NULL. */
	void (*sync)(void *uc, struct kpemu_icount *c);
};

/* What a C trap handler returns -- the same contract as a Python one's
 * False / True / (ip, flags), and -1 with a Python exception set. */
enum {
	KPEMU_TRAP_DECLINE = 0,		/* not mine: try the next handler */
	KPEMU_TRAP_HANDLED = 1,		/* handled, nothing to write */
	KPEMU_TRAP_RESUME = 2,		/* handled: resume with *ip and *flags */
};

/* A C trap handler: a capsule of this name holding a struct
 * kpemu_trap_handler, given with its owner to emu._fastpath.CTrapHandler, which
 * is what goes in the trap table (it keeps the owner alive, visibly to the GC,
 * and is callable from Python like any handler). */
#define KPEMU_TRAP_CAPSULE "emu._fastpath.trap_handler"

struct kpemu_trap_handler {
	/* Called with the GIL held, *ip and *flags as trapped. */
	int (*fn)(PyObject *owner, unsigned int vector, uint64_t *ip, uint64_t *flags);
};

#define KPEMU_API_CAPSULE "emu._fastpath._C_API"

struct kpemu_api {
	/* PtRegs.at_trap(): a new view of the CPU behind `regfile` (the engine's
	 * RegFile) with ip and flags as trapped; NULL with an exception set. */
	PyObject *(*regs_at_trap)(PyObject *regfile, uint64_t ip, uint64_t flags);
	/* The same for a view regs_at_trap() made earlier that nobody else holds
	 * now (the caller's is its only reference): that object again, as new --
	 * nothing read, nothing to write -- a new reference.  NULL, no exception
	 * set, when someone else holds it (a handler kept it) or it is not a view
	 * of `regfile`: the caller makes a new one. */
	PyObject *(*regs_again)(PyObject *regfile, PyObject *regs, uint64_t ip, uint64_t flags);
	/* PtRegs.trap_return(): write the changed registers other than ip and
	 * flags and give those two back; -1 with an exception set. */
	int (*regs_trap_return)(PyObject *regs, uint64_t *ip, uint64_t *flags);
	/* What a Python trap handler returned (`res`, stolen; NULL if it raised)
	 * as a KPEMU_TRAP_* code, a tuple's ip and flags stored; -1 on error. */
	int (*trap_result)(PyObject *res, uint64_t *ip, uint64_t *flags);
	/* The CPU behind `regfile`, natively: a register by Unicorn id, a 64-bit
	 * read or write at a guest virtual address (through the page tables).
	 * 0, or -1 with no exception set (an unmapped address): the caller then
	 * hands the case to its Python path, which reports it. */
	int (*reg_read)(PyObject *regfile, int regid, uint64_t *out);
	int (*vmem_read_u64)(PyObject *regfile, uint64_t va, uint64_t *out);
	int (*vmem_write_u64)(PyObject *regfile, uint64_t va, uint64_t value);
};

#endif
