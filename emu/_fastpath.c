/*
 * kpemu's C: two Unicorn callbacks -- the guest clock's counter and the
 * interrupt hook's register traffic -- and the pt_regs view handlers get.  All
 * three are mechanism only -- what an interrupt means is decided in Python
 * (emu/machine.py, and kprobes through its trap table); this file knows neither
 * x86 vectors nor kprobes, only the names of the registers.
 *
 * 1. The guest clock (a UC_HOOK_BLOCK on all code, and UC_HOOK_CODE where a
 * block must be counted instruction by instruction).
 *
 * kpemu's clock is the number of guest instructions executed.  Unicorn can
 * count on its own (emu_start's `count`), but that counter can be neither read
 * nor adjusted while the guest runs, and kpemu needs both: a PIT programmed by
 * an OUT records the count at that OUT, rdtsc returns it, and work done on the
 * guest's behalf (a kprobe's int3, code a handler runs) must be taken back out.
 * So the counter lives in a struct the host reads and writes through ctypes.
 * A code hook on every instruction would cost a C call, an exit check and the
 * flags computed before each one (1.4x the guest's time); the clock is counted
 * a translated block at a time instead, exact wherever the guest or the host
 * can look at it -- how, at part 1 below.
 *
 * 2. The interrupt hook (UC_HOOK_INTR).
 *
 * Every trap kprobes takes (int3, then #DB after the single-step) needs the
 * trapped RIP and EFLAGS and sets new ones.  Through ctypes each of those
 * register crossings costs more than the Python handler itself, and so does
 * each Python frame between Unicorn and the handler.  So this callback reads
 * RIP and EFLAGS natively and calls, with the GIL held, the handlers the host
 * registered for the vector -- `table[vector]`, a list of
 *
 *     fn(vector, ip, flags) -> False | True | (ip, flags)
 *
 * tried in order until one returns a true value -- and, when none claims the
 * interrupt, `fallback(vector, ip, flags)` (same contract).  A tuple
 * (ip, flags) is what the CPU resumes with: each of the two is written back
 * natively when it differs from the CPU's (re-read: two native reads cost
 * nothing, and a handler may have run guest code in between); True writes
 * nothing (nothing changed, or the handler wrote registers itself).  The
 * table is the host's own dict of lists, read afresh at every interrupt, so
 * registering a handler needs no call here.
 *
 * A handler in the list may also be a C function (a CTrapHandler, emu/kpemu.h):
 * it is called with ip and flags as C integers and gives them back the same
 * way, with no Python object made for either -- kprobes' trap path registers
 * itself like that.
 *
 * An exception raised by a handler is kept here (the first one wins) for the
 * host to take and re-raise once emu_start returns, and the guest is stopped
 * before its next instruction the way the counter stops it: the deadline is
 * set to now (so the stop costs no instruction count).
 *
 * Nothing is linked against libunicorn: the host passes the addresses of
 * uc_reg_read and uc_reg_write (and uc_emu_stop for the counter) it already
 * loaded.
 *
 * Nesting: a Python handler may run guest code (m.call -> uc_emu_start from
 * inside this hook).  ctypes releases the GIL around that call and this
 * callback takes it again with PyGILState_Ensure, which nests: each level
 * releases exactly what it took.  Everything a level needs lives on its own C
 * stack, so the same hook object serves every level.
 *
 * 3. The pt_regs view (emu.cpu.PtRegs), below with its own comment: registers
 * read and written natively, lazily, by Linux's pt_regs names.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int (*uc_reg_fn)(void *uc, int regid, void *value);
#include "kpemu.h"

#define UC_PROT_READ 1

/* -- 1. the guest clock --------------------------------------------------- */

/*
 * Two counting regimes, one clock (struct kpemu_icount, emu/kpemu.h).
 *
 * Per instruction (kpemu_icount_hook, UC_HOOK_CODE): before each instruction,
 * stop if executed >= deadline (Unicorn checks for a stop request right after
 * a code hook, so the instruction does not run), else count it.  This is the
 * reference: Engine(clock="insn") counts every instruction so.
 *
 * Per block (kpemu_block_hook, UC_HOOK_BLOCK on all code): Unicorn calls it
 * before a translated block runs, and checks for a stop request right after it
 * (gen_tb_start), so a stop requested there lands before the block's first
 * instruction.  The hook adds the previous block to `executed` (it ran to its
 * end: a block is left early only by an exception, which settles it, below),
 * stops if the deadline is reached, and otherwise keeps this block's
 * instruction count in `pending`.  Inside a block `executed` therefore lags; a
 * hook that reads the clock there first calls clock_sync(), which finds the
 * instruction at RIP among the block's and counts the block up to it -- the
 * value the per-instruction clock has there (the instruction at RIP counted).
 * That needs RIP, which Unicorn sets before faults, int3 and int n, syscall,
 * rdtsc/rdtscp and cpuid; after emu_start returns it is set too.
 *
 * Not every event can be counted that way: an OUT or IN does not set RIP, and
 * a stop its handler asks for (a UART interrupt, power-off, a PIT reprogrammed)
 * must land right after it, which only a code hook after it can do.  And a
 * deadline that falls inside a block must stop there.  Such a block is run
 * per instruction: the block hook stops before it and names it in `want`; the
 * host (Engine.start) puts its start in the precise set, moves the one code
 * hook's range onto exactly that block (Unicorn reads the range only when it
 * translates), drops the block's translation and runs on.  The new translation
 * carries a hook call before each instruction, and the block hook -- which
 * marks a translation B_PRECISE only if it is in the set and the range covered
 * it when it was made -- leaves the counting to that hook (`precise`).  Such a
 * block stays so for good (blocks with port I/O or cpuid, and those a deadline
 * fell in: a CPU stepped one instruction at a time goes through the same few);
 * a later translation of it outside the range is stopped before and made again.
 * The code hook is the only one, so Unicorn calls it straight from the
 * translated code too, and counts nothing where it was not translated in.
 *
 * A run can also stop at the next block boundary (set_boundary: the first block
 * start once the clock has passed where the run began), with no deadline inside
 * a block and so nothing run per instruction.  The machine runs so while an
 * interrupt waits for IF: only a block's last instruction can set IF (sti,
 * popf, iret and sysret end their blocks), so a block at a time finds the same
 * instruction one at a time would.  `prev_last` names the last instruction of
 * the block that ran (an sti's shadow holds interrupts one instruction more).
 *
 * What the hook knows of a block -- its instruction count, where each
 * instruction starts, whether it does port I/O -- is decoded once per
 * translation (capstone, through the library the capstone package loaded) and
 * kept under the address the hook returns to: Unicorn calls a lone block hook
 * straight from the translated code, so that address names the translation
 * itself, and code rewritten at the same address (another process, a patched
 * kernel text) is a new translation with a new entry.  Engine.flush_all_code,
 * after which addresses are reused, empties the table.
 *
 * The block hook also calls the engine's entry hooks (a Python fn() for a
 * block starting at a given address), so that it stays the only block hook:
 * Unicorn calls a block hook from the translated code only when it is alone.
 *
 * Guest stores, and code pages.  A store goes through Unicorn's fast path
 * (inline, no call) once its TLB entry is "dirty"; until then each store calls
 * notdirty_write(), which drops the translations the store overlaps and makes
 * the entry dirty -- but only if no memory hook's range covers the physical
 * address and the entry is not executable (Unicorn 2.1.4 stubs out QEMU's
 * dirty bitmap, so nothing else decides).  When a translation is made,
 * Unicorn un-dirties only the entries of the virtual page it was made from.
 * So a page of code written through another, non-executable mapping (a
 * page-cache page of a program, which the kernel writes through its direct
 * map; a JIT's second mapping) would, once that entry is dirty, be written
 * with no translation dropped: stale code.  QEMU keeps code pages' entries
 * un-dirty by physical page.  kpemu does the same here: the first time a
 * translation of a physical page is seen, the page is "guarded" -- put in
 * the range of one of a fixed set of memory hooks (UC_HOOK_MEM_FETCH_UNMAPPED,
 * which never fires for RAM: their one effect is that notdirty_write leaves
 * the page's entries un-dirty) -- and every dirty entry mapping it is made
 * un-dirty (tlb_reset_dirty, by host address: all its mappings).  Every store
 * to a code page then drops what it overwrites, as on QEMU and on the CPU;
 * stores to other pages go the fast path.  A page stays guarded.  The hook
 * ranges are the struct hooks' begin and end, moved in C (private offsets,
 * checked at set_guards()); a page near a guarded range widens it, and once
 * every hook is in use the nearest range is widened (more pages guarded: a
 * slower store there, never a wrong one).  A translation is seen at its first
 * run, not when it is made; the CPU loop runs a block it has just made at once
 * (a stop requested in between is taken before the lookup that makes it), so
 * only a stop asked for from another thread during the making could let a
 * store come between.
 */

#define B_IO		1u	/* has port I/O or cpuid: run per instruction */
#define B_PRECISE	2u	/* translated with the per-instruction hook */
#define B_ENTRY		4u	/* an entry hook is registered at its start */
#define MAX_BLOCK_INSNS	512	/* TCG_MAX_INSNS */
#define MAX_BLOCK_BYTES	8192
#define MAX_TRANSLATIONS (1u << 20)	/* then the table starts afresh (code retranslated
					 * again and again: probes armed and disarmed) */
#define GUARDS		128	/* the most guard hooks set_guards() takes */
#define GUARD_GAP	(32ull << 12)	/* a page this near a guarded range widens it */
#define NEVER		UINT64_MAX

struct block {
	uint64_t key;		/* the address in the translation the hook returns to */
	uint64_t pc;
	uint32_t size;		/* bytes */
	uint16_t icount;	/* instructions */
	uint16_t flags;		/* B_* */
	uint64_t last;		/* the address of its last instruction */
	uint16_t *starts;	/* offset from pc of each instruction */
};

/* An open-addressed set of 64-bit keys with a value each (0 is no key), a key
 * beside its value: one cache line for a lookup (the block hook's, per block). */
struct u64map {
	struct {
		uint64_t key, val;
	} *slots;
	size_t cap;		/* a power of two, or 0 */
	size_t used;
};

typedef int (*cs_open_fn)(int arch, int mode, size_t *handle);
typedef void *(*cs_malloc_fn)(size_t handle);
typedef int (*cs_iter_fn)(size_t handle, const uint8_t **code, size_t *size, uint64_t *address,
			  void *insn);

struct clock_state {
	struct kpemu_icount *c;
	int insn_mode;		/* Engine(clock="insn"): every instruction per instruction */
	uc_reg_fn reg_read;
	const uint8_t *ram;	/* guest RAM (physical 0..ram_size) */
	uint64_t ram_size;
	int ip_id, cr0_id, cr3_id;
	size_t cs;		/* the capstone handle */
	void *cs_insn;
	cs_iter_fn cs_iter;
	size_t insn_id_off, insn_size_off;
	unsigned int io_ids[16];	/* capstone ids of the instructions that make B_IO */
	int n_io_ids;
	struct u64map tbs;	/* key -> struct block * */
	struct u64map precise;	/* starts of the blocks counted per instruction */
	uint64_t *range;	/* begin, end of the per-instruction hook (struct hook, private) */
	struct u64map entries;	/* block start -> 1 */
	PyObject *entry_fns;	/* dict: block start -> fn() */
	PyObject *error_sink;	/* fn(exc) for an exception an entry hook raised */
	uint64_t last_insn;	/* the instruction the code hook counted last in this block */
	int boundary;		/* stop at the first block start after boundary_from */
	int boundary_hit;	/* ... and it did */
	uint64_t boundary_from;
	uint64_t prev_last;	/* the last instruction of the block that ran before this one */
	uint64_t want_pc;	/* a block to run per instruction (0: none) */
	uint32_t want_size;
	int saved;		/* outer blocks kept by save() for a nested run */
	size_t max_translations;	/* MAX_TRANSLATIONS, lower in tests */
	uint64_t decoded;	/* translations decoded */
	uint64_t blocks;	/* blocks counted whole */
	/* code pages (see the top of this part); n_guards 0: not set up */
	uint8_t *guarded;	/* a bit per RAM page */
	uint64_t *guards[GUARDS];	/* begin, end of each guard hook (struct hook) */
	int n_guards, guards_used;
	void *cpu;		/* Unicorn's CPUState */
	void (*reset_dirty)(void *cpu, uintptr_t start, uintptr_t length);	/* tlb_reset_dirty */
	uint64_t guarded_pages;	/* pages guarded (stats) */
	uint8_t buf[MAX_BLOCK_BYTES];
};

static size_t map_slot(const struct u64map *m, uint64_t key)
{
	return (size_t)((key * 0x9E3779B97F4A7C15ull) >> 20) & (m->cap - 1);
}

static uint64_t *map_find(const struct u64map *m, uint64_t key)
{
	size_t i;

	if (m->cap == 0)
		return NULL;
	for (i = map_slot(m, key); m->slots[i].key != 0; i = (i + 1) & (m->cap - 1))
		if (m->slots[i].key == key)
			return &m->slots[i].val;
	return NULL;
}

static int map_put(struct u64map *m, uint64_t key, uint64_t val);

static int map_grow(struct u64map *m)
{
	struct u64map old = *m;
	size_t i;

	m->cap = old.cap ? old.cap * 2 : 1024;
	m->used = 0;
	m->slots = calloc(m->cap, sizeof(m->slots[0]));
	if (m->slots == NULL) {
		*m = old;
		return -1;
	}
	for (i = 0; i < old.cap; i++)
		if (old.slots[i].key != 0)
			map_put(m, old.slots[i].key, old.slots[i].val);
	free(old.slots);
	return 0;
}

static int map_put(struct u64map *m, uint64_t key, uint64_t val)
{
	size_t i;

	if ((m->used + 1) * 2 > m->cap && map_grow(m) < 0)
		return -1;
	for (i = map_slot(m, key); m->slots[i].key != 0 && m->slots[i].key != key;
	     i = (i + 1) & (m->cap - 1))
		;
	if (m->slots[i].key == 0)
		m->used++;
	m->slots[i].key = key;
	m->slots[i].val = val;
	return 0;
}

static void map_free(struct u64map *m)
{
	free(m->slots);
	memset(m, 0, sizeof(*m));
}

static void free_blocks(struct clock_state *s)
{
	size_t i;

	for (i = 0; i < s->tbs.cap; i++)
		if (s->tbs.slots[i].key != 0) {
			struct block *b = (struct block *)(uintptr_t)s->tbs.slots[i].val;

			free(b->starts);
			free(b);
		}
	map_free(&s->tbs);
}

#define X86_CR0_PG	(1ull << 31)
#define PTE_PRESENT	1ull
#define PTE_PSE		(1ull << 7)
#define PTE_ADDR	0x000ffffffffff000ull

/* The physical address of `va` by the guest's 4-level page tables, read from
 * RAM (as emu.memory.Memory.walk does: Unicorn's own translation fills its TLB
 * and may leave an exception behind); ~0 when it is not mapped. */
static uint64_t walk(struct clock_state *s, uint64_t cr0, uint64_t cr3, uint64_t va)
{
	uint64_t table = cr3 & PTE_ADDR, entry;
	int shift;

	if (!(cr0 & X86_CR0_PG))
		return va < s->ram_size ? va : ~0ull;
	if ((va >> 47) != 0 && (va >> 47) != 0x1ffff)
		return ~0ull;
	for (shift = 39; shift >= 12; shift -= 9) {
		uint64_t at = table + ((va >> shift) & 0x1ff) * 8;

		if (at + 8 > s->ram_size)
			return ~0ull;
		memcpy(&entry, s->ram + at, 8);
		if (!(entry & PTE_PRESENT))
			return ~0ull;
		if ((shift == 30 || shift == 21) && (entry & PTE_PSE)) {
			uint64_t mask = (1ull << shift) - 1;

			return (entry & PTE_ADDR & ~mask) | (va & mask);
		}
		table = entry & PTE_ADDR;
	}
	return table | (va & 0xfff);
}

/* The guest bytes of [pc, pc+size) into s->buf, a page at a time; -1 if any is
 * not mapped. */
static int read_code(struct clock_state *s, void *uc, uint64_t pc, uint32_t size)
{
	uint64_t cr0 = 0, cr3 = 0;
	uint32_t done = 0;

	s->reg_read(uc, s->cr0_id, &cr0);
	s->reg_read(uc, s->cr3_id, &cr3);
	while (done < size) {
		uint64_t va = pc + done, pa;
		uint32_t chunk = (uint32_t)(0x1000 - (va & 0xfff));

		if (chunk > size - done)
			chunk = size - done;
		pa = walk(s, cr0, cr3, va);
		if (pa == ~0ull || pa + chunk > s->ram_size)
			return -1;
		memcpy(s->buf + done, s->ram + pa, chunk);
		done += chunk;
	}
	return 0;
}

/* Decode the translation at [pc, pc+size): its instructions, where each
 * starts, and whether any does port I/O.  A block that cannot be decoded whole
 * is marked B_IO: counted per instruction, which needs no decoding. */
static struct block *decode_block(struct clock_state *s, void *uc, uint64_t key, uint64_t pc,
				  uint32_t size)
{
	struct block *b = calloc(1, sizeof(*b));
	uint16_t starts[MAX_BLOCK_INSNS];
	const uint8_t *code = s->buf;
	size_t left = size;
	uint64_t addr = pc;
	int n = 0, io = 0, i;

	if (b == NULL)
		return NULL;
	b->key = key;
	b->pc = pc;
	b->size = size;
	if (size == 0 || size > MAX_BLOCK_BYTES || read_code(s, uc, pc, size) < 0) {
		io = 1;
	} else {
		while (left > 0 && n < MAX_BLOCK_INSNS) {
			unsigned int id;

			starts[n] = (uint16_t)(addr - pc);
			if (!s->cs_iter(s->cs, &code, &left, &addr, s->cs_insn))
				break;
			memcpy(&id, (char *)s->cs_insn + s->insn_id_off, sizeof(id));
			for (i = 0; i < s->n_io_ids; i++)
				io |= id == s->io_ids[i];
			n++;
		}
		if (left != 0)
			io = 1;
	}
	b->icount = (uint16_t)n;
	b->flags = io ? B_IO : 0;
	if (n > 0) {
		b->starts = malloc(n * sizeof(uint16_t));
		if (b->starts == NULL) {
			free(b);
			return NULL;
		}
		memcpy(b->starts, starts, n * sizeof(uint16_t));
	}
	b->last = pc + (n > 0 ? starts[n - 1] : 0);
	s->decoded++;
	return b;
}

/* The flags a translation gets when it is first seen, which is when it was just
 * made: B_PRECISE if it is to be counted per instruction and the code hook's
 * range covered it then (so Unicorn put a hook call before each instruction). */
static void block_set_flags(struct clock_state *s, struct block *b)
{
	if (map_find(&s->precise, b->pc) != NULL && s->range != NULL &&
	    s->range[0] <= b->pc && b->pc + b->size - 1 <= s->range[1])
		b->flags |= B_PRECISE;
	if (map_find(&s->entries, b->pc) != NULL)
		b->flags |= B_ENTRY;
}

static int page_guarded(struct clock_state *s, uint64_t pa)
{
	return s->guarded[pa >> 15] & (1u << ((pa >> 12) & 7));
}

/* Guard the RAM pages [lo, hi] (page addresses, hi >= lo): in the bitmap, in a
 * guard hook's range, and no dirty TLB entry left for them. */
static void guard_range(struct clock_state *s, uint64_t lo, uint64_t hi)
{
	uint64_t *g = NULL, best = NEVER, pa;
	int i;

	for (i = 0; i < s->guards_used; i++) {	/* the nearest range */
		uint64_t *r = s->guards[i];
		uint64_t d = hi < r[0] ? r[0] - hi : lo > r[1] ? lo - r[1] : 0;

		if (d < best) {
			best = d;
			g = r;
		}
	}
	if (g != NULL && (best <= GUARD_GAP || s->guards_used == s->n_guards)) {
		if (lo > g[1])		/* what widening covers is guarded too */
			lo = g[1] + 1;
		if (hi < g[0])
			hi = g[0] - 0x1000;
		if (lo < g[0])
			g[0] = lo;
		if (hi + 0xfff > g[1])
			g[1] = hi + 0xfff;
	} else {
		g = s->guards[s->guards_used++];
		g[0] = lo;
		g[1] = hi + 0xfff;
	}
	for (pa = lo; pa <= hi; pa += 0x1000) {
		if (!page_guarded(s, pa)) {
			s->guarded[pa >> 15] |= 1u << ((pa >> 12) & 7);
			s->guarded_pages++;
		}
	}
	s->reset_dirty(s->cpu, (uintptr_t)s->ram + lo, hi + 0x1000 - lo);
}

/* A translation of [pc, pc+size) was just seen: guard its physical pages. */
static void guard_code(struct clock_state *s, void *uc, uint64_t pc, uint32_t size)
{
	uint64_t cr0 = 0, cr3 = 0, pages = ((pc & 0xfff) + (size ? size : 1) + 0xfff) >> 12, i;

	s->reg_read(uc, s->cr0_id, &cr0);
	s->reg_read(uc, s->cr3_id, &cr3);
	for (i = 0; i < pages; i++) {		/* (counted: the last page may wrap to 0) */
		uint64_t pa = walk(s, cr0, cr3, (pc & ~0xfffull) + (i << 12));

		if (pa != ~0ull && pa < s->ram_size && !page_guarded(s, pa & ~0xfffull))
			guard_range(s, pa & ~0xfffull, pa & ~0xfffull);
	}
}

static struct block *lookup_block(struct clock_state *s, void *uc, uint64_t key, uint64_t pc,
				  uint32_t size)
{
	uint64_t *slot = map_find(&s->tbs, key);
	struct block *b;

	if (slot != NULL) {
		b = (struct block *)(uintptr_t)*slot;
		if (b->pc == pc && b->size == size)
			return b;
	}
	if (slot == NULL && s->tbs.used >= s->max_translations && s->saved == 0 &&
	    s->c->block == NULL)
		free_blocks(s);		/* nothing points into it now */
	if (s->n_guards > 0)
		guard_code(s, uc, pc, size);
	b = decode_block(s, uc, key, pc, size);
	if (b == NULL)
		return NULL;
	block_set_flags(s, b);
	if (slot != NULL) {
		struct block *old = (struct block *)(uintptr_t)*slot;

		free(old->starts);
		free(old);
		*slot = (uint64_t)(uintptr_t)b;
	} else if (map_put(&s->tbs, key, (uint64_t)(uintptr_t)b) < 0) {
		free(b->starts);
		free(b);
		return NULL;
	}
	return b;
}

/* Count the running block up to the instruction at `ip` (counting it): all of
 * it when ip is at its end or outside it (it ran whole: the exception came
 * from the next block's translation).  `drop`: the rest will not run (an
 * exception, or emu_start returned). */
static void clock_sync_at(struct kpemu_icount *c, uint64_t ip, int drop)
{
	struct block *b = c->block;
	uint64_t done, already;

	if (b == NULL)
		return;
	done = b->icount;
	if (ip >= b->pc && ip < b->pc + b->size) {
		uint32_t off = (uint32_t)(ip - b->pc);
		int i = 0;

		while (i + 1 < b->icount && b->starts[i + 1] <= off)
			i++;
		done = (uint64_t)i + 1;
	}
	already = b->icount - c->pending;
	if (done > already) {
		c->executed += done - already;
		c->pending -= done - already;
	}
	if (drop) {
		c->pending = 0;
		c->block = NULL;
	}
}

static void clock_sync(void *uc, struct kpemu_icount *c)
{
	struct clock_state *s = c->clock;
	uint64_t ip = 0;

	if (c->block == NULL)
		return;
	s->reg_read(uc, s->ip_id, &ip);
	clock_sync_at(c, ip, 0);
}

/* An entry hook's fn(), with the GIL (it may stop the guest: request_stop). */
static void call_entry(struct clock_state *s, uint64_t pc)
{
	PyGILState_STATE gil = PyGILState_Ensure();
	PyObject *key = PyLong_FromUnsignedLongLong(pc), *fn, *res = NULL;

	if (key != NULL && s->entry_fns != NULL) {
		fn = PyDict_GetItemWithError(s->entry_fns, key);
		if (fn != NULL)
			res = PyObject_CallNoArgs(fn);
	}
	Py_XDECREF(key);
	Py_XDECREF(res);
	if (PyErr_Occurred()) {		/* the engine's wrapper keeps its own; a bug here */
		PyErr_WriteUnraisable(NULL);
		s->c->deadline = s->c->executed;
	}
	PyGILState_Release(gil);
}

static void kpemu_icount_hook(void *uc, uint64_t address, uint32_t size,
			      void *user_data)
{
	struct kpemu_icount *c = user_data;
	struct clock_state *s = c->clock;

	(void)size;
	/* Not in a block counted whole that overlaps a precise range, and once per
	 * instruction where two hooks' ranges overlap (a block grown since its first
	 * hook, or two blocks sharing code): Unicorn calls each. */
	if (!c->precise || address == s->last_insn)
		return;
	s->last_insn = address;
	if (c->executed >= c->deadline) {
		c->stops++;
		c->emu_stop(uc);
		return;
	}
	c->executed++;
}

static void kpemu_block_hook(void *uc, uint64_t pc, uint32_t size, void *user_data)
{
	struct kpemu_icount *c = user_data;
	struct clock_state *s = c->clock;
	uint64_t key = (uint64_t)(uintptr_t)__builtin_return_address(0);
	struct block *b = c->block;

	/* Which instruction ran last: the machine asks after a stop at a boundary
	 * (an sti there keeps interrupts blocked for one more instruction). */
	if (b != NULL)
		s->prev_last = b->last;
	else
		s->prev_last = c->precise ? s->last_insn : UINT64_MAX;
	s->last_insn = UINT64_MAX;
	if (s->insn_mode) {
		if (map_find(&s->entries, pc) != NULL)
			call_entry(s, pc);
		return;
	}
	c->executed += c->pending;	/* the previous block ran to its end */
	c->pending = 0;
	c->block = NULL;
	c->precise = 0;
	b = lookup_block(s, uc, key, pc, size);
	if (b == NULL) {		/* out of memory: stop, the host reports it */
		s->want_pc = pc;
		s->want_size = 0;
		c->emu_stop(uc);
		return;
	}
	if (b->flags & B_ENTRY)
		call_entry(s, pc);
	if (c->executed >= c->deadline ||
	    (s->boundary && c->executed > s->boundary_from)) {
		s->boundary_hit = c->executed < c->deadline;
		c->stops++;
		c->emu_stop(uc);
		return;
	}
	if (b->flags & B_PRECISE) {
		c->precise = 1;
		return;
	}
	if ((b->flags & B_IO) || c->executed + b->icount > c->deadline ||
	    map_find(&s->precise, pc) != NULL) {
		s->want_pc = pc;
		s->want_size = size;
		c->emu_stop(uc);
		return;
	}
	s->blocks++;
	c->pending = b->icount;
	c->block = b;
}

/* The clock's Python face for the engine: emu._fastpath.BlockClock. */
typedef struct {
	PyObject_HEAD
	struct clock_state *s;
	PyObject *icount_owner;	/* keeps the counter's memory alive */
	void *uc;
} BlockClock;

static int bc_init(BlockClock *self, PyObject *args, PyObject *kwds)
{
	static char *kwlist[] = {"icount", "icount_address", "uc", "reg_read", "ram", "ram_size",
				 "reg_ids", "insn_mode", "cs_open", "cs_malloc", "cs_iter",
				 "cs_arch", "cs_mode", "insn_id_offset", "io_ids", NULL};
	PyObject *owner, *io_ids;
	unsigned long long icount, uc, rd, ram, ram_size, csopen, csmalloc, csiter;
	int ip_id, cr0_id, cr3_id, insn_mode, arch, mode;
	Py_ssize_t idoff, i;
	struct clock_state *s;

	if (!PyArg_ParseTupleAndKeywords(args, kwds, "OKKKKK(iii)pKKKiinO", kwlist, &owner,
					 &icount, &uc, &rd, &ram, &ram_size, &ip_id, &cr0_id,
					 &cr3_id, &insn_mode, &csopen, &csmalloc, &csiter, &arch,
					 &mode, &idoff, &io_ids))
		return -1;
	if (!icount || !uc || !rd || !ram || !csopen || !csmalloc || !csiter) {
		PyErr_SetString(PyExc_ValueError, "null address");
		return -1;
	}
	if (self->s != NULL) {
		PyErr_SetString(PyExc_RuntimeError, "BlockClock initialised twice");
		return -1;
	}
	io_ids = PySequence_Fast(io_ids, "io_ids must be a sequence");
	if (io_ids == NULL)
		return -1;
	s = calloc(1, sizeof(*s));
	if (s == NULL) {
		Py_DECREF(io_ids);
		PyErr_NoMemory();
		return -1;
	}
	for (i = 0; i < PySequence_Fast_GET_SIZE(io_ids) && i < 16; i++)
		s->io_ids[s->n_io_ids++] =
			(unsigned int)PyLong_AsUnsignedLong(PySequence_Fast_GET_ITEM(io_ids, i));
	Py_DECREF(io_ids);
	s->c = (struct kpemu_icount *)(uintptr_t)icount;
	s->max_translations = MAX_TRANSLATIONS;
	s->insn_mode = insn_mode;
	s->reg_read = (uc_reg_fn)(uintptr_t)rd;
	s->ram = (const uint8_t *)(uintptr_t)ram;
	s->ram_size = ram_size;
	s->ip_id = ip_id;
	s->cr0_id = cr0_id;
	s->cr3_id = cr3_id;
	s->cs_iter = (cs_iter_fn)(uintptr_t)csiter;
	s->insn_id_off = (size_t)idoff;
	if (PyErr_Occurred() || ((cs_open_fn)(uintptr_t)csopen)(arch, mode, &s->cs) != 0 ||
	    (s->cs_insn = ((cs_malloc_fn)(uintptr_t)csmalloc)(s->cs)) == NULL) {
		free(s);
		if (!PyErr_Occurred())
			PyErr_SetString(PyExc_RuntimeError, "capstone would not open for x86-64");
		return -1;
	}
	s->entry_fns = PyDict_New();
	if (s->entry_fns == NULL) {
		free(s);
		return -1;
	}
	self->s = s;
	self->uc = (void *)(uintptr_t)uc;
	Py_INCREF(owner);
	self->icount_owner = owner;
	s->c->clock = s;
	s->c->sync = clock_sync;
	s->c->precise = insn_mode ? 1 : 0;
	return 0;
}

static int bc_traverse(BlockClock *self, visitproc visit, void *arg)
{
	if (self->s != NULL)
		Py_VISIT(self->s->entry_fns);
	Py_VISIT(self->icount_owner);
	return 0;
}

static int bc_clear(BlockClock *self)
{
	if (self->s != NULL)
		Py_CLEAR(self->s->entry_fns);
	return 0;
}

/* The capstone handle and instruction are not freed: the library may be gone
 * by then at exit, and a process makes few engines. */
static void bc_dealloc(BlockClock *self)
{
	PyObject_GC_UnTrack(self);
	if (self->s != NULL) {
		Py_CLEAR(self->s->entry_fns);
		free_blocks(self->s);
		map_free(&self->s->precise);
		map_free(&self->s->entries);
		free(self->s->guarded);
		free(self->s);
	}
	Py_CLEAR(self->icount_owner);
	Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *bc_add_entry(BlockClock *self, PyObject *args)
{
	unsigned long long pc;
	PyObject *fn, *key;
	int rc;

	if (!PyArg_ParseTuple(args, "KO:add_entry", &pc, &fn))
		return NULL;
	if (self->s->c->block != NULL) {
		PyErr_SetString(PyExc_RuntimeError, "an entry hook added inside a block");
		return NULL;
	}
	key = PyLong_FromUnsignedLongLong(pc);
	if (key == NULL)
		return NULL;
	rc = PyDict_SetItem(self->s->entry_fns, key, fn);
	Py_DECREF(key);
	if (rc < 0 || map_put(&self->s->entries, pc, 1) < 0)
		return rc < 0 ? NULL : PyErr_NoMemory();
	free_blocks(self->s);		/* flags are taken when a translation is first seen */
	Py_RETURN_NONE;
}

/* add_precise(pc, size): the block at pc is counted per instruction from its
 * next translation on -- the code hook's range is moved onto it for that
 * translation (the caller drops the current one). */
static PyObject *bc_add_precise(BlockClock *self, PyObject *args)
{
	unsigned long long pc;
	unsigned int size;

	if (!PyArg_ParseTuple(args, "KI:add_precise", &pc, &size))
		return NULL;
	if (self->s->range == NULL || size == 0) {
		PyErr_SetString(PyExc_RuntimeError, "add_precise: no code hook range to move");
		return NULL;
	}
	if (map_put(&self->s->precise, pc, 1) < 0)
		return PyErr_NoMemory();
	self->s->range[0] = pc;
	self->s->range[1] = pc + size - 1;
	Py_RETURN_NONE;
}

/* The begin and end of the struct hook behind uc_hook handle `addr`, checked
 * against what it was added with -- at the offsets of the pinned Unicorn's
 * struct hook -- or NULL with a RuntimeError. */
static uint64_t *hook_range(uintptr_t addr, uint64_t begin, uint64_t end, void *callback,
			    void *user_data)
{
	uint64_t *h = (uint64_t *)(addr + 24);
	void **p = (void **)(addr + 40);

	if (addr == 0 || h[0] != begin || h[1] != end || p[0] != callback || p[1] != user_data) {
		PyErr_SetString(PyExc_RuntimeError,
				"libunicorn's struct hook is not laid out as kpemu expects "
				"(begin, end, callback, user_data at +24, +32, +40, +48)");
		return NULL;
	}
	return h;
}

/* set_hook(address): the per-instruction hook's struct hook (its uc_hook
 * handle), whose begin and end add_precise moves, checked first. */
static PyObject *bc_set_hook(BlockClock *self, PyObject *args)
{
	unsigned long long addr, begin, end;
	uint64_t *h;

	if (!PyArg_ParseTuple(args, "KKK:set_hook", &addr, &begin, &end))
		return NULL;
	h = hook_range((uintptr_t)addr, begin, end, (void *)kpemu_icount_hook, self->s->c);
	if (h == NULL)
		return NULL;
	self->s->range = h;
	Py_RETURN_NONE;
}

/* A guard hook's callback: never called for RAM, which is mapped. */
static bool kpemu_guard_hook(void *uc, int type, uint64_t address, int size, int64_t value,
			     void *user_data)
{
	(void)uc, (void)type, (void)address, (void)size, (void)value, (void)user_data;
	return false;
}

/* set_guards(handles, get_cpu, reset_dirty): the guard hooks (uc_hook handles
 * of hooks added with kpemu_guard_hook, this clock's user data and the range
 * [NEVER, NEVER]), each checked by hook_range(), and Unicorn's qemu_get_cpu
 * (its one CPU has no index: -1) and tlb_reset_dirty. */
static PyObject *bc_set_guards(BlockClock *self, PyObject *args)
{
	struct clock_state *s = self->s;
	unsigned long long get_cpu, reset_dirty;
	PyObject *handles;
	Py_ssize_t i, n;

	if (!PyArg_ParseTuple(args, "OKK:set_guards", &handles, &get_cpu, &reset_dirty))
		return NULL;
	handles = PySequence_Fast(handles, "handles must be a sequence");
	if (handles == NULL)
		return NULL;
	n = PySequence_Fast_GET_SIZE(handles);
	if (n == 0 || n > GUARDS || !get_cpu || !reset_dirty || s->n_guards) {
		Py_DECREF(handles);
		PyErr_SetString(PyExc_ValueError, "set_guards: 1 to 128 hooks, once, and two functions");
		return NULL;
	}
	s->guarded = calloc((s->ram_size >> 15) + 1, 1);
	if (s->guarded == NULL) {
		Py_DECREF(handles);
		return PyErr_NoMemory();
	}
	for (i = 0; i < n; i++) {
		uintptr_t addr = (uintptr_t)PyLong_AsUnsignedLongLong(PySequence_Fast_GET_ITEM(handles, i));

		if (PyErr_Occurred() || (s->guards[i] = hook_range(addr, NEVER, NEVER,
				(void *)kpemu_guard_hook, s->c)) == NULL) {
			Py_DECREF(handles);
			free(s->guarded);
			s->guarded = NULL;
			return NULL;
		}
	}
	Py_DECREF(handles);
	s->cpu = ((void *(*)(void *, int))(uintptr_t)get_cpu)(self->uc, -1);
	if (s->cpu == NULL) {
		free(s->guarded);
		s->guarded = NULL;
		PyErr_SetString(PyExc_RuntimeError, "libunicorn's qemu_get_cpu(uc, -1) found no CPU");
		return NULL;
	}
	s->reset_dirty = (void (*)(void *, uintptr_t, uintptr_t))(uintptr_t)reset_dirty;
	s->n_guards = (int)n;
	Py_RETURN_NONE;
}

/* (pc, size, permanent) of the block the hook stopped before to have it run
 * per instruction, and forget it; None when it stopped for nothing of the kind. */
static PyObject *bc_take_want(BlockClock *self, PyObject *unused)
{
	struct clock_state *s = self->s;
	PyObject *res;

	if (s->want_pc == 0)
		Py_RETURN_NONE;
	if (s->want_size == 0) {
		s->want_pc = 0;
		return PyErr_NoMemory();
	}
	res = Py_BuildValue("(KI)", (unsigned long long)s->want_pc, s->want_size);
	s->want_pc = 0;
	return res;
}

/* After emu_start returned, or from a Python hook at an instruction that set
 * RIP: make `executed` exact there.  sync(drop): drop=True when the rest of the
 * block will not run. */
static PyObject *bc_sync(BlockClock *self, PyObject *arg)
{
	struct kpemu_icount *c = self->s->c;
	int drop = PyObject_IsTrue(arg);
	uint64_t ip = 0;

	if (drop < 0)
		return NULL;
	if (c->block != NULL) {
		self->s->reg_read(self->uc, self->s->ip_id, &ip);
		clock_sync_at(c, ip, drop);
	}
	Py_RETURN_NONE;
}

/* set_boundary(on, since): stop before the first block that starts once the clock
 * has passed `since` -- a run of at most one block, whatever its length, counted
 * whole (a deadline inside it would make it run per instruction). */
static PyObject *bc_set_boundary(BlockClock *self, PyObject *args)
{
	int on;
	unsigned long long since;

	if (!PyArg_ParseTuple(args, "pK:set_boundary", &on, &since))
		return NULL;
	self->s->boundary = on;
	self->s->boundary_from = since;
	self->s->boundary_hit = 0;
	Py_RETURN_NONE;
}

static PyObject *bc_get_boundary(BlockClock *self, void *closure)
{
	return Py_BuildValue("(OK)", self->s->boundary ? Py_True : Py_False,
			     (unsigned long long)self->s->boundary_from);
}

static PyObject *bc_get_boundary_hit(BlockClock *self, void *closure)
{
	return PyBool_FromLong(self->s->boundary_hit);
}

static PyObject *bc_get_prev_last(BlockClock *self, void *closure)
{
	if (self->s->prev_last == UINT64_MAX)
		Py_RETURN_NONE;
	return PyLong_FromUnsignedLongLong(self->s->prev_last);
}

/* The running block's state, to put back after a nested emu_start. */
static PyObject *bc_save(BlockClock *self, PyObject *unused)
{
	struct kpemu_icount *c = self->s->c;

	self->s->saved++;
	return Py_BuildValue("(KKK)", (unsigned long long)c->pending,
			     (unsigned long long)(uintptr_t)c->block,
			     (unsigned long long)c->precise);
}

static PyObject *bc_restore(BlockClock *self, PyObject *args)
{
	struct kpemu_icount *c = self->s->c;
	unsigned long long pending, block, precise;

	if (!PyArg_ParseTuple(args, "(KKK):restore", &pending, &block, &precise))
		return NULL;
	self->s->saved -= self->s->saved > 0;
	c->pending = pending;
	c->block = (void *)(uintptr_t)block;
	c->precise = precise;
	Py_RETURN_NONE;
}

/* reset(precise): no block running, for a nested run (after save()). */
static PyObject *bc_reset(BlockClock *self, PyObject *arg)
{
	struct kpemu_icount *c = self->s->c;
	int precise = PyObject_IsTrue(arg);

	if (precise < 0)
		return NULL;
	c->pending = 0;
	c->block = NULL;
	c->precise = (uint64_t)precise;
	Py_RETURN_NONE;
}

static PyObject *bc_clear_cache(BlockClock *self, PyObject *unused)
{
	struct kpemu_icount *c = self->s->c;

	if (c->block != NULL) {
		PyErr_SetString(PyExc_RuntimeError, "the block table cleared inside a block");
		return NULL;
	}
	free_blocks(self->s);
	Py_RETURN_NONE;
}

static PyObject *bc_get_max_translations(BlockClock *self, void *closure)
{
	return PyLong_FromSize_t(self->s->max_translations);
}

static int bc_set_max_translations(BlockClock *self, PyObject *value, void *closure)
{
	size_t n = value != NULL ? PyLong_AsSize_t(value) : 0;

	if (PyErr_Occurred())
		return -1;
	if (n == 0) {
		PyErr_SetString(PyExc_ValueError, "max_translations must be at least 1");
		return -1;
	}
	self->s->max_translations = n;
	return 0;
}

static PyObject *bc_get_user_data(BlockClock *self, void *closure)
{
	return PyLong_FromVoidPtr(self->s->c);
}

static PyObject *bc_get_stats(BlockClock *self, void *closure)
{
	struct clock_state *s = self->s;

	return Py_BuildValue("{sKsKsnsnsKsi}", "decoded", (unsigned long long)s->decoded,
			     "blocks", (unsigned long long)s->blocks,
			     "translations", (Py_ssize_t)s->tbs.used,
			     "precise", (Py_ssize_t)s->precise.used,
			     "guarded_pages", (unsigned long long)s->guarded_pages,
			     "guard_ranges", s->guards_used);
}

static PyMethodDef bc_methods[] = {
	{"add_entry", (PyCFunction)bc_add_entry, METH_VARARGS,
	 "add_entry(pc, fn): call fn() before a block starting at pc runs."},
	{"add_precise", (PyCFunction)bc_add_precise, METH_VARARGS,
	 "add_precise(pc, size): count the block at pc per instruction from its next translation."},
	{"set_hook", (PyCFunction)bc_set_hook, METH_VARARGS,
	 "set_hook(handle, begin, end): the per-instruction hook whose range add_precise moves."},
	{"set_guards", (PyCFunction)bc_set_guards, METH_VARARGS,
	 "set_guards(handles, get_cpu, reset_dirty): the hooks that guard code pages, and\n"
	 "Unicorn's qemu_get_cpu and tlb_reset_dirty (see part 1 of _fastpath.c)."},
	{"take_want", (PyCFunction)bc_take_want, METH_NOARGS,
	 "(pc, size) of the block to run per instruction, or None."},
	{"sync", (PyCFunction)bc_sync, METH_O,
	 "sync(drop): make the clock exact at RIP (drop: the block's rest will not run)."},
	{"set_boundary", (PyCFunction)bc_set_boundary, METH_VARARGS,
	 "set_boundary(on, since): stop at the first block start after the clock passed since."},
	{"save", (PyCFunction)bc_save, METH_NOARGS, "The running block's state."},
	{"restore", (PyCFunction)bc_restore, METH_VARARGS, "Put back what save() returned."},
	{"reset", (PyCFunction)bc_reset, METH_O,
	 "reset(precise): no block running (a nested run, between save and restore)."},
	{"clear_cache", (PyCFunction)bc_clear_cache, METH_NOARGS,
	 "Forget every translation (after the translation cache was flushed)."},
	{NULL, NULL, 0, NULL},
};

static PyGetSetDef bc_getset[] = {
	{"boundary", (getter)bc_get_boundary, NULL, "(on, since) of set_boundary()."},
	{"boundary_hit", (getter)bc_get_boundary_hit, NULL,
	 "The run set_boundary() was last called for stopped at the boundary."},
	{"prev_last", (getter)bc_get_prev_last, NULL,
	 "The last instruction of the block that ran before the current one (None: unknown)."},
	{"user_data", (getter)bc_get_user_data, NULL,
	 "The counter, user_data of both counting hooks (keep this object alive)."},
	{"stats", (getter)bc_get_stats, NULL,
	 "Translations decoded, blocks counted whole, table sizes."},
	{"max_translations", (getter)bc_get_max_translations, (setter)bc_set_max_translations,
	 "Translations kept before the table starts afresh."},
	{NULL},
};

static PyTypeObject BlockClockType = {
	PyVarObject_HEAD_INIT(NULL, 0)
	.tp_name = "emu._fastpath.BlockClock",
	.tp_doc = "The guest clock's block counter and its tables (see _fastpath.c, part 1).",
	.tp_basicsize = sizeof(BlockClock),
	.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
	.tp_new = PyType_GenericNew,
	.tp_init = (initproc)bc_init,
	.tp_traverse = (traverseproc)bc_traverse,
	.tp_clear = (inquiry)bc_clear,
	.tp_dealloc = (destructor)bc_dealloc,
	.tp_methods = bc_methods,
	.tp_getset = bc_getset,
};

/* -- 2. the interrupt hook ----------------------------------------------- */

typedef struct {
	PyObject_HEAD
	PyObject *table;		/* dict: vector -> list of fn(vector, ip, flags) */
	PyObject *fallback;		/* fn(vector, ip, flags) when no handler claims it */
	PyObject *error;		/* the first exception a handler raised, or NULL */
	PyObject *icount_owner;		/* keeps the counter's memory alive */
	struct kpemu_icount *icount;	/* to stop the guest: deadline = executed */
	uc_reg_fn reg_read;
	uc_reg_fn reg_write;
	int ip_id;			/* UC_X86_REG_RIP */
	int flags_id;			/* UC_X86_REG_EFLAGS */
	unsigned long long calls;	/* interrupts seen */
	/* table[vector] for the exception vectors, kept while the dict's version
	 * (PEP 509) is `version[vector]` (0: not kept); borrowed: the table holds it */
	PyObject *handlers[32];
	uint64_t version[32];
} InterruptHook;

/* Keep the pending exception (the first one wins) and stop the guest before its
 * next instruction, as the host's request_stop() does. */
static void keep_error(InterruptHook *h)
{
	if (h->error == NULL) {
		PyObject *type, *value, *tb;

		PyErr_Fetch(&type, &value, &tb);
		PyErr_NormalizeException(&type, &value, &tb);
		if (value != NULL && tb != NULL)
			PyException_SetTraceback(value, tb);
		h->error = value;	/* takes the reference */
		Py_XDECREF(type);
		Py_XDECREF(tb);
	} else {
		PyErr_Clear();
	}
	h->icount->deadline = h->icount->executed;
}

/* A C trap handler in the trap table: the function of a kpemu_trap_handler
 * capsule and its owner (emu/kpemu.h). */
typedef struct {
	PyObject_HEAD
	int (*fn)(PyObject *owner, unsigned int vector, uint64_t *ip, uint64_t *flags);
	PyObject *owner;
	vectorcallfunc vectorcall;
} CTrapHandler;

static PyTypeObject CTrapHandlerType;

/* What a Python handler returned, as a KPEMU_TRAP_* code (steals `res`). */
static int python_result(PyObject *res, uint64_t *ip, uint64_t *flags)
{
	int code;

	if (res == NULL)
		return -1;
	if (PyTuple_Check(res) && PyTuple_GET_SIZE(res) == 2) {
		*ip = PyLong_AsUnsignedLongLongMask(PyTuple_GET_ITEM(res, 0));
		*flags = PyLong_AsUnsignedLongLongMask(PyTuple_GET_ITEM(res, 1));
		code = PyErr_Occurred() ? -1 : KPEMU_TRAP_RESUME;
	} else {
		code = PyObject_IsTrue(res);	/* -1, DECLINE or HANDLED */
	}
	Py_DECREF(res);
	return code;
}

/* A Python handler (or the fallback) called with (vector, ip, flags); the
 * arguments are made once, at the first Python handler.  args[-1] is scratch
 * space (PY_VECTORCALL_ARGUMENTS_OFFSET: a bound method then needs no new
 * argument array). */
static int call_python(PyObject *fn, PyObject **args, unsigned int intno, uint64_t *ip,
		       uint64_t *flags)
{
	if (args[0] == NULL) {
		args[0] = PyLong_FromUnsignedLong(intno);
		args[1] = PyLong_FromUnsignedLongLong(*ip);
		args[2] = PyLong_FromUnsignedLongLong(*flags);
		if (args[0] == NULL || args[1] == NULL || args[2] == NULL)
			return -1;
	}
	return python_result(PyObject_Vectorcall(fn, args, 3 | PY_VECTORCALL_ARGUMENTS_OFFSET,
						 NULL), ip, flags);
}

/* The handlers of table[vector] in order, then the fallback: the first
 * KPEMU_TRAP_* code that is not DECLINE (or the fallback's), -1 with an
 * exception set when one raised.  *ip and *flags hold the trapped values and
 * receive the ones to resume with. */
static int dispatch(InterruptHook *h, unsigned int intno, uint64_t *ip, uint64_t *flags)
{
	PyObject *argv[4] = {NULL}, **args = argv + 1, *key, *handlers;
	Py_ssize_t i;
	int code = KPEMU_TRAP_DECLINE;

	if (h->table == NULL || h->fallback == NULL) {	/* cleared by the GC */
		PyErr_SetString(PyExc_RuntimeError, "kpemu: interrupt hook used after its engine");
		return -1;
	}
#if PY_VERSION_HEX < 0x030C0000
	if (intno < 32 && h->version[intno] != 0 &&
	    h->version[intno] == ((PyDictObject *)h->table)->ma_version_tag) {
		handlers = h->handlers[intno];
	} else
#endif
	{
		key = PyLong_FromUnsignedLong(intno);
		if (key == NULL)
			return -1;
		handlers = PyDict_GetItemWithError(h->table, key);
		Py_DECREF(key);
		if (handlers == NULL && PyErr_Occurred())
			return -1;
#if PY_VERSION_HEX < 0x030C0000
		if (intno < 32) {
			h->handlers[intno] = handlers;
			h->version[intno] = ((PyDictObject *)h->table)->ma_version_tag;
		}
#endif
	}
	if (handlers != NULL && PyList_Check(handlers)) {
		Py_INCREF(handlers);
		/* Like a Python for loop: the list may change under a handler. */
		for (i = 0; code == KPEMU_TRAP_DECLINE && i < PyList_GET_SIZE(handlers); i++) {
			PyObject *fn = PyList_GET_ITEM(handlers, i);

			Py_INCREF(fn);
			if (Py_IS_TYPE(fn, &CTrapHandlerType)) {
				CTrapHandler *th = (CTrapHandler *)fn;
				/* later handlers see ip and flags as trapped */
				uint64_t new_ip = *ip, new_flags = *flags;

				code = th->fn(th->owner, intno, &new_ip, &new_flags);
				if (code == KPEMU_TRAP_RESUME) {
					*ip = new_ip;
					*flags = new_flags;
				}
			} else {
				code = call_python(fn, args, intno, ip, flags);
			}
			Py_DECREF(fn);
		}
		Py_DECREF(handlers);
	}
	if (code == KPEMU_TRAP_DECLINE)
		code = call_python(h->fallback, args, intno, ip, flags);
	Py_XDECREF(args[0]);
	Py_XDECREF(args[1]);
	Py_XDECREF(args[2]);
	return code;
}

static void kpemu_intr_hook(void *uc, uint32_t intno, void *user_data)
{
	InterruptHook *h = user_data;
	uint64_t ip = 0, flags = 0;	/* zeroed: EFLAGS reads fill only 4 bytes */
	uint64_t trapped_ip, trapped_flags, ran;
	PyGILState_STATE gil;
	int code;

	h->reg_read(uc, h->ip_id, &ip);
	h->reg_read(uc, h->flags_id, &flags);
	/* Inside a block counted whole: count it up to the instruction that trapped
	 * (a fault: RIP is at it; int3, int n, a single-step #DB: those end their
	 * block, RIP is past it); the rest of the block does not run. */
	clock_sync_at(h->icount, ip, 1);

	gil = PyGILState_Ensure();
	h->calls++;
	Py_INCREF(h);			/* a handler may drop the last other reference */
	trapped_ip = ip;
	trapped_flags = flags;
	ran = h->icount->executed + h->icount->hidden;
	code = dispatch(h, intno, &ip, &flags);
	if (code < 0) {
		keep_error(h);
	} else if (code == KPEMU_TRAP_RESUME) {
		uint64_t now_ip = trapped_ip, now_flags = trapped_flags;

		/* Compared with the CPU as it is now: as trapped, unless a handler
		 * ran guest code (a nested emu_start, which executed instructions:
		 * counted, or taken out of the clock into `hidden`), then re-read. */
		if (h->icount->executed + h->icount->hidden != ran) {
			now_flags = now_ip = 0;	/* EFLAGS reads fill only 4 bytes */
			h->reg_read(uc, h->flags_id, &now_flags);
			h->reg_read(uc, h->ip_id, &now_ip);
		}
		if (flags != now_flags)
			h->reg_write(uc, h->flags_id, &flags);
		if (ip != now_ip)
			h->reg_write(uc, h->ip_id, &ip);
	}
	Py_DECREF(h);
	PyGILState_Release(gil);
}

/* Called from Python (a direct call, a test): the same contract as a Python
 * handler -- False, True or (ip, flags). */
static PyObject *cth_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf,
				PyObject *kwnames)
{
	CTrapHandler *th = (CTrapHandler *)self;
	unsigned long vector;
	uint64_t ip, flags;
	int code;

	if (PyVectorcall_NARGS(nargsf) != 3 || kwnames != NULL) {
		PyErr_SetString(PyExc_TypeError, "a trap handler takes (vector, ip, flags)");
		return NULL;
	}
	vector = PyLong_AsUnsignedLong(args[0]);
	ip = PyLong_AsUnsignedLongLongMask(args[1]);
	flags = PyLong_AsUnsignedLongLongMask(args[2]);
	if (PyErr_Occurred())
		return NULL;
	code = th->fn(th->owner, (unsigned int)vector, &ip, &flags);
	if (code < 0)
		return NULL;
	if (code == KPEMU_TRAP_RESUME)
		return Py_BuildValue("(KK)", (unsigned long long)ip, (unsigned long long)flags);
	return PyBool_FromLong(code == KPEMU_TRAP_HANDLED);
}

static PyObject *cth_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
	static char *kwlist[] = {"capsule", "owner", NULL};
	PyObject *capsule, *owner;
	struct kpemu_trap_handler *spec;
	CTrapHandler *th;

	if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO:CTrapHandler", kwlist, &capsule, &owner))
		return NULL;
	spec = PyCapsule_GetPointer(capsule, KPEMU_TRAP_CAPSULE);
	if (spec == NULL)
		return NULL;
	th = (CTrapHandler *)type->tp_alloc(type, 0);
	if (th == NULL)
		return NULL;
	th->fn = spec->fn;
	Py_INCREF(owner);
	th->owner = owner;
	th->vectorcall = cth_vectorcall;
	return (PyObject *)th;
}

static int cth_traverse(CTrapHandler *th, visitproc visit, void *arg)
{
	Py_VISIT(th->owner);
	return 0;
}

static int cth_clear(CTrapHandler *th)
{
	Py_CLEAR(th->owner);
	return 0;
}

static void cth_dealloc(CTrapHandler *th)
{
	PyObject_GC_UnTrack(th);
	Py_CLEAR(th->owner);
	Py_TYPE(th)->tp_free((PyObject *)th);
}

static PyObject *cth_richcompare(PyObject *a, PyObject *b, int op)
{
	int same;

	if (!Py_IS_TYPE(b, &CTrapHandlerType) || (op != Py_EQ && op != Py_NE))
		Py_RETURN_NOTIMPLEMENTED;
	same = ((CTrapHandler *)a)->fn == ((CTrapHandler *)b)->fn &&
	       ((CTrapHandler *)a)->owner == ((CTrapHandler *)b)->owner;
	return PyBool_FromLong(op == Py_EQ ? same : !same);
}

static PyObject *cth_repr(CTrapHandler *th)
{
	return PyUnicode_FromFormat("<C trap handler of %R>", th->owner);
}

static PyMemberDef cth_members[] = {
	{"owner", T_OBJECT, offsetof(CTrapHandler, owner), READONLY, "what the handler serves"},
	{NULL},
};

static PyTypeObject CTrapHandlerType = {
	PyVarObject_HEAD_INIT(NULL, 0)
	.tp_name = "emu._fastpath.CTrapHandler",
	.tp_doc = "CTrapHandler(capsule, owner): a trap handler written in C (emu/kpemu.h),\n"
		  "for the engine's trap table; callable as fn(vector, ip, flags).",
	.tp_basicsize = sizeof(CTrapHandler),
	.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
	.tp_vectorcall_offset = offsetof(CTrapHandler, vectorcall),
	.tp_call = PyVectorcall_Call,
	.tp_new = cth_new,
	.tp_traverse = (traverseproc)cth_traverse,
	.tp_clear = (inquiry)cth_clear,
	.tp_dealloc = (destructor)cth_dealloc,
	.tp_richcompare = cth_richcompare,
	.tp_repr = (reprfunc)cth_repr,
	.tp_members = cth_members,
};

static int ih_init(InterruptHook *self, PyObject *args, PyObject *kwds)
{
	static char *kwlist[] = {"table", "fallback", "icount", "icount_addr",
				 "reg_read", "reg_write", "ip_id", "flags_id", NULL};
	PyObject *table, *fallback, *owner;
	unsigned long long icount, rd, wr;

	if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!OOKKKii", kwlist,
					 &PyDict_Type, &table, &fallback, &owner,
					 &icount, &rd, &wr, &self->ip_id,
					 &self->flags_id))
		return -1;
	if (!PyCallable_Check(fallback)) {
		PyErr_SetString(PyExc_TypeError, "fallback must be callable");
		return -1;
	}
	if (!icount || !rd || !wr) {
		PyErr_SetString(PyExc_ValueError, "null address");
		return -1;
	}
	Py_INCREF(table);
	Py_XSETREF(self->table, table);
	memset(self->version, 0, sizeof(self->version));
	Py_INCREF(fallback);
	Py_XSETREF(self->fallback, fallback);
	Py_INCREF(owner);
	Py_XSETREF(self->icount_owner, owner);
	self->icount = (struct kpemu_icount *)(uintptr_t)icount;
	self->reg_read = (uc_reg_fn)(uintptr_t)rd;
	self->reg_write = (uc_reg_fn)(uintptr_t)wr;
	return 0;
}

static int ih_traverse(InterruptHook *self, visitproc visit, void *arg)
{
	Py_VISIT(self->table);
	Py_VISIT(self->fallback);
	Py_VISIT(self->error);
	Py_VISIT(self->icount_owner);
	return 0;
}

/* Breaks reference cycles (engine -> hook -> bound method -> engine).  The
 * counter's owner is kept: the Uc may still run the hook until it is closed. */
static int ih_clear(InterruptHook *self)
{
	Py_CLEAR(self->error);
	Py_CLEAR(self->table);
	Py_CLEAR(self->fallback);
	return 0;
}

static void ih_dealloc(InterruptHook *self)
{
	PyObject_GC_UnTrack(self);
	Py_CLEAR(self->table);
	Py_CLEAR(self->fallback);
	Py_CLEAR(self->error);
	Py_CLEAR(self->icount_owner);
	Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *ih_take_error(InterruptHook *self, PyObject *unused)
{
	PyObject *err = self->error;

	self->error = NULL;
	if (err == NULL)
		Py_RETURN_NONE;
	return err;
}

static PyObject *ih_get_user_data(InterruptHook *self, void *closure)
{
	return PyLong_FromVoidPtr(self);
}

static PyObject *ih_get_calls(InterruptHook *self, void *closure)
{
	return PyLong_FromUnsignedLongLong(self->calls);
}

static PyMethodDef ih_methods[] = {
	{"take_error", (PyCFunction)ih_take_error, METH_NOARGS,
	 "The exception a handler raised since the last call (and forget it), or None."},
	{NULL, NULL, 0, NULL},
};

static PyGetSetDef ih_getset[] = {
	{"user_data", (getter)ih_get_user_data, NULL,
	 "The pointer to pass as uc_hook_add's user_data (keep this object alive)."},
	{"calls", (getter)ih_get_calls, NULL, "Interrupts this hook has seen."},
	{NULL},
};

static PyTypeObject InterruptHookType = {
	PyVarObject_HEAD_INIT(NULL, 0)
	.tp_name = "emu._fastpath.InterruptHook",
	.tp_doc = "InterruptHook(table, fallback, icount, icount_addr, reg_read, reg_write,\n"
		  "              ip_id, flags_id)\n"
		  "State of the C UC_HOOK_INTR callback (see _fastpath.c).",
	.tp_basicsize = sizeof(InterruptHook),
	.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
	.tp_new = PyType_GenericNew,
	.tp_init = (initproc)ih_init,
	.tp_traverse = (traverseproc)ih_traverse,
	.tp_clear = (inquiry)ih_clear,
	.tp_dealloc = (destructor)ih_dealloc,
	.tp_methods = ih_methods,
	.tp_getset = ih_getset,
};

/* -- 3. the pt_regs view ------------------------------------------------- */

/*
 * What every kprobe handler gets as `regs` (emu/cpu.py documents it): the CPU's
 * registers by Linux's x86_64 pt_regs names, read lazily and written back when
 * the handler returns.  A register is read from Unicorn natively the first time
 * it is asked for, then kept; a write is kept and marked, and flush() (or
 * trap_return() on the trap path) writes the marked ones natively.  A view costs
 * no Unicorn call unless a register is used, and a used register costs one
 * native call instead of a ctypes crossing.
 *
 * RegFile is the engine's half: the uc handle, uc_reg_read/uc_reg_write and the
 * Unicorn id of each pt_regs register; it keeps the Uc object alive.
 */

#define NREGS 20
enum { REG_IP = 15, REG_FLAGS = 17 };

/* Linux's struct pt_regs order (orig_ax aside). */
static const char *const reg_names[NREGS] = {
	"r15", "r14", "r13", "r12", "bp", "bx", "r11", "r10", "r9", "r8",
	"ax", "cx", "dx", "si", "di", "ip", "cs", "flags", "sp", "ss",
};
/* The 2.6-era spellings, which handlers written for 2.6.13 use. */
static const char *const reg_aliases[][2] = {
	{"rax", "ax"}, {"rbx", "bx"}, {"rcx", "cx"}, {"rdx", "dx"}, {"rsi", "si"},
	{"rdi", "di"}, {"rbp", "bp"}, {"rsp", "sp"}, {"rip", "ip"}, {"eflags", "flags"},
};

static PyObject *reg_index;		/* dict: name or alias -> index */
static PyObject *reg_name_objs[NREGS];	/* the canonical names, interned */

/* uc_vmem_read / uc_vmem_write: guest virtual memory through the CPU's page tables */
typedef int (*uc_vmem_fn)(void *uc, uint64_t address, int prot, void *bytes, size_t size);
#define UC_PROT_WRITE 2

typedef struct {
	PyObject_HEAD
	PyObject *owner;		/* the Uc object: keeps the handle valid */
	void *uc;
	uc_reg_fn reg_read;
	uc_reg_fn reg_write;
	uc_vmem_fn vmem_read;		/* optional (NULL: the C API's vmem calls fail) */
	uc_vmem_fn vmem_write;
	int ids[NREGS];
} RegFile;

static int rf_init(RegFile *self, PyObject *args, PyObject *kwds)
{
	static char *kwlist[] = {"owner", "uc", "reg_read", "reg_write", "ids", "vmem_read",
				 "vmem_write", NULL};
	PyObject *owner, *ids;
	unsigned long long uc, rd, wr, vrd = 0, vwr = 0;
	int i;

	if (!PyArg_ParseTupleAndKeywords(args, kwds, "OKKKO!|KK", kwlist, &owner, &uc, &rd, &wr,
					 &PyDict_Type, &ids, &vrd, &vwr))
		return -1;
	if (!uc || !rd || !wr) {
		PyErr_SetString(PyExc_ValueError, "null address");
		return -1;
	}
	for (i = 0; i < NREGS; i++) {
		PyObject *id = PyDict_GetItemWithError(ids, reg_name_objs[i]);

		if (id == NULL) {
			if (!PyErr_Occurred())
				PyErr_Format(PyExc_KeyError, "no Unicorn id for register %s",
					     reg_names[i]);
			return -1;
		}
		self->ids[i] = (int)PyLong_AsLong(id);
		if (PyErr_Occurred())
			return -1;
	}
	Py_INCREF(owner);
	Py_XSETREF(self->owner, owner);
	self->uc = (void *)(uintptr_t)uc;
	self->reg_read = (uc_reg_fn)(uintptr_t)rd;
	self->reg_write = (uc_reg_fn)(uintptr_t)wr;
	self->vmem_read = (uc_vmem_fn)(uintptr_t)vrd;
	self->vmem_write = (uc_vmem_fn)(uintptr_t)vwr;
	return 0;
}

static void rf_dealloc(RegFile *self)
{
	Py_CLEAR(self->owner);
	Py_TYPE(self)->tp_free((PyObject *)self);
}

/* RegFile.read(regid): one register by Unicorn id, natively (Engine.reg). */
static PyObject *rf_read(RegFile *self, PyObject *arg)
{
	long regid = PyLong_AsLong(arg);
	uint64_t v = 0;		/* EFLAGS and selectors fill only part of it */

	if (regid == -1 && PyErr_Occurred())
		return NULL;
	if (self->reg_read(self->uc, (int)regid, &v) != 0) {
		PyErr_Format(PyExc_ValueError, "uc_reg_read of register id %ld failed", regid);
		return NULL;
	}
	return PyLong_FromUnsignedLongLong(v);
}

static PyMethodDef rf_methods[] = {
	{"read", (PyCFunction)rf_read, METH_O,
	 "read(regid): the register with that Unicorn id, read natively."},
	{NULL, NULL, 0, NULL},
};

static PyTypeObject RegFileType = {
	PyVarObject_HEAD_INIT(NULL, 0)
	.tp_name = "emu._fastpath.RegFile",
	.tp_doc = "RegFile(owner, uc, reg_read, reg_write, ids, vmem_read=0, vmem_write=0)\n"
		  "The engine's registers (and virtual memory, for C callers) for pt_regs\n"
		  "views (see _fastpath.c).",
	.tp_basicsize = sizeof(RegFile),
	.tp_flags = Py_TPFLAGS_DEFAULT,
	.tp_new = PyType_GenericNew,
	.tp_init = (initproc)rf_init,
	.tp_dealloc = (destructor)rf_dealloc,
	.tp_methods = rf_methods,
};

typedef struct {
	PyObject_HEAD
	RegFile *rf;
	uint32_t valid;			/* registers read (or written) so far */
	uint32_t dirty;			/* registers written, not yet flushed */
	uint64_t val[NREGS];
} PtRegsObject;

static PyTypeObject PtRegsType;

static PyObject *api_regs_at_trap(PyObject *regfile, uint64_t ip, uint64_t flags);

/* engine.regfile (a new reference), or NULL with a TypeError naming `engine`. */
static PyObject *engine_regfile(PyObject *engine)
{
	static PyObject *regfile_name;
	PyObject *rf;

	if (regfile_name == NULL &&
	    (regfile_name = PyUnicode_InternFromString("regfile")) == NULL)
		return NULL;
	rf = PyObject_GetAttr(engine, regfile_name);
	if (rf == NULL && PyErr_ExceptionMatches(PyExc_AttributeError))
		PyErr_Clear();
	else if (rf == NULL)
		return NULL;
	if (rf == NULL || !PyObject_TypeCheck(rf, &RegFileType)) {
		PyErr_Format(PyExc_TypeError, "PtRegs needs an emu engine (with a RegFile), not %R",
			     engine);
		Py_XDECREF(rf);
		return NULL;
	}
	return rf;
}

/* A new view of the CPU behind `rf` (a RegFile), nothing read yet. */
static PtRegsObject *view_new(PyObject *rf)
{
	PtRegsObject *r = (PtRegsObject *)PtRegsType.tp_alloc(&PtRegsType, 0);

	if (r != NULL) {
		Py_INCREF(rf);
		r->rf = (RegFile *)rf;
	}
	return r;
}

static PyObject *pr_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
	PyObject *engine, *rf, *r;

	if (!PyArg_ParseTuple(args, "O:PtRegs", &engine))
		return NULL;
	if (kwds != NULL && PyDict_GET_SIZE(kwds) > 0) {
		PyErr_SetString(PyExc_TypeError, "PtRegs(engine) takes no keyword arguments");
		return NULL;
	}
	rf = engine_regfile(engine);
	if (rf == NULL)
		return NULL;
	r = (PyObject *)view_new(rf);
	Py_DECREF(rf);
	return r;
}

/* PtRegs.at_trap(engine, ip, flags): the view a trap handler hands out, with ip
 * and flags as the interrupt hook read them. */
static PyObject *pr_at_trap(PyObject *type, PyObject *const *args, Py_ssize_t nargs)
{
	PyObject *rf, *r;
	uint64_t ip, flags;

	if (nargs != 3) {
		PyErr_SetString(PyExc_TypeError, "at_trap(engine, ip, flags)");
		return NULL;
	}
	ip = PyLong_AsUnsignedLongLongMask(args[1]);
	flags = PyLong_AsUnsignedLongLongMask(args[2]);
	if (PyErr_Occurred())
		return NULL;
	rf = engine_regfile(args[0]);
	if (rf == NULL)
		return NULL;
	r = api_regs_at_trap(rf, ip, flags);
	Py_DECREF(rf);
	return r;
}

static void pr_dealloc(PtRegsObject *r)
{
	Py_CLEAR(r->rf);
	Py_TYPE(r)->tp_free((PyObject *)r);
}

/* Index of a register name or alias; -1 (no exception) when it is none. */
static int reg_lookup(PyObject *name)
{
	PyObject *idx;

	if (!PyUnicode_Check(name))
		return -1;
	idx = PyDict_GetItemWithError(reg_index, name);
	if (idx == NULL) {
		PyErr_Clear();
		return -1;
	}
	return (int)PyLong_AsLong(idx);
}

static uint64_t reg_get(PtRegsObject *r, int i)
{
	if (!(r->valid & (1u << i))) {
		uint64_t v = 0;		/* EFLAGS and selectors fill only part of it */

		r->rf->reg_read(r->rf->uc, r->rf->ids[i], &v);
		r->val[i] = v;
		r->valid |= 1u << i;
	}
	return r->val[i];
}

static PyObject *no_register(PyObject *name)
{
	PyErr_Format(PyExc_AttributeError, "pt_regs has no register %R", name);
	return NULL;
}

static int reg_set(PtRegsObject *r, int i, PyObject *value)
{
	PyObject *num;
	uint64_t v;

	if (value == NULL) {
		PyErr_Format(PyExc_TypeError, "a pt_regs register cannot be deleted: %s",
			     reg_names[i]);
		return -1;
	}
	num = PyNumber_Index(value);	/* an integer: a float or a string is a bug */
	if (num == NULL)
		return -1;
	v = PyLong_AsUnsignedLongLongMask(num);	/* & 0xffffffffffffffff */
	Py_DECREF(num);
	if (PyErr_Occurred())
		return -1;
	r->val[i] = v;
	r->valid |= 1u << i;
	r->dirty |= 1u << i;
	return 0;
}

/* Registers are getset descriptors (the closure is the index), so attribute
 * access stays the generic one -- and method calls on a view stay fast. */
static PyObject *pr_get(PtRegsObject *r, void *closure)
{
	return PyLong_FromUnsignedLongLong(reg_get(r, (int)(intptr_t)closure));
}

static int pr_set(PtRegsObject *r, PyObject *value, void *closure)
{
	return reg_set(r, (int)(intptr_t)closure, value);
}

static PyGetSetDef pr_getset[NREGS + sizeof(reg_aliases) / sizeof(reg_aliases[0]) + 1];

/* Writing a name that is not a register is a typo, not a new attribute. */
static int pr_setattro(PyObject *r, PyObject *name, PyObject *value)
{
	int rc = PyObject_GenericSetAttr(r, name, value);

	if (rc < 0 && PyErr_ExceptionMatches(PyExc_AttributeError)) {
		PyErr_Clear();
		no_register(name);
	}
	return rc;
}

static void pr_write_dirty(PtRegsObject *r)
{
	uint32_t dirty = r->dirty;	/* most handlers write nothing */

	while (dirty) {
		int i = __builtin_ctz(dirty);

		r->rf->reg_write(r->rf->uc, r->rf->ids[i], &r->val[i]);
		dirty &= dirty - 1;
	}
	r->dirty = 0;
}

static PyObject *pr_flush(PtRegsObject *r, PyObject *unused)
{
	pr_write_dirty(r);
	Py_RETURN_NONE;
}

static int api_regs_trap_return(PyObject *regs, uint64_t *ip, uint64_t *flags);

static PyObject *pr_trap_return(PtRegsObject *r, PyObject *unused)
{
	uint64_t ip, flags;

	if (api_regs_trap_return((PyObject *)r, &ip, &flags) < 0)
		return NULL;
	return Py_BuildValue("(KK)", (unsigned long long)ip, (unsigned long long)flags);
}

static PyObject *pr_refresh(PtRegsObject *r, PyObject *unused)
{
	pr_write_dirty(r);
	r->valid = 0;
	Py_RETURN_NONE;
}

static PyObject *pr_as_dict(PtRegsObject *r, PyObject *unused)
{
	PyObject *d = PyDict_New();
	int i;

	if (d == NULL)
		return NULL;
	for (i = 0; i < NREGS; i++) {
		PyObject *v = PyLong_FromUnsignedLongLong(reg_get(r, i));

		if (v == NULL || PyDict_SetItem(d, reg_name_objs[i], v) < 0) {
			Py_XDECREF(v);
			Py_DECREF(d);
			return NULL;
		}
		Py_DECREF(v);
	}
	return d;
}

static PyObject *pr_repr(PtRegsObject *r)
{
	static const int shown[] = {REG_IP, 18, 4, 10, 14, 13, REG_FLAGS};	/* ip sp bp ax di si flags */
	char buf[256];
	size_t i, n = 0;

	n += snprintf(buf + n, sizeof(buf) - n, "<pt_regs");
	for (i = 0; i < sizeof(shown) / sizeof(shown[0]); i++)
		n += snprintf(buf + n, sizeof(buf) - n, " %s=%#" PRIx64, reg_names[shown[i]],
			      reg_get(r, shown[i]));
	snprintf(buf + n, sizeof(buf) - n, ">");
	return PyUnicode_FromString(buf);
}

static PyObject *pr_subscript(PtRegsObject *r, PyObject *name)
{
	int i = reg_lookup(name);

	if (i < 0) {
		PyErr_Format(PyExc_KeyError, "pt_regs has no register %R", name);
		return NULL;
	}
	return PyLong_FromUnsignedLongLong(reg_get(r, i));
}

static int pr_ass_subscript(PtRegsObject *r, PyObject *name, PyObject *value)
{
	if (reg_lookup(name) < 0) {
		PyErr_Format(PyExc_KeyError, "pt_regs has no register %R", name);
		return -1;
	}
	return reg_set(r, reg_lookup(name), value);
}

static PyMappingMethods pr_mapping = {
	.mp_subscript = (binaryfunc)pr_subscript,
	.mp_ass_subscript = (objobjargproc)pr_ass_subscript,
};

static PyMethodDef pr_methods[] = {
	{"at_trap", (PyCFunction)(void (*)(void))pr_at_trap, METH_FASTCALL | METH_CLASS,
	 "at_trap(engine, ip, flags): the view a trap handler hands out."},
	{"trap_return", (PyCFunction)pr_trap_return, METH_NOARGS,
	 "Write the changed registers other than ip and flags, and return (ip, flags)\n"
	 "for the interrupt hook to write."},
	{"flush", (PyCFunction)pr_flush, METH_NOARGS, "Write the changed registers."},
	{"refresh", (PyCFunction)pr_refresh, METH_NOARGS,
	 "Write the changed registers and forget the values read (the CPU moved on)."},
	{"as_dict", (PyCFunction)pr_as_dict, METH_NOARGS, "Every register, by name."},
	{NULL, NULL, 0, NULL},
};

static PyTypeObject PtRegsType = {
	PyVarObject_HEAD_INIT(NULL, 0)
	.tp_name = "emu.cpu.PtRegs",
	.tp_doc = "PtRegs(engine): writable view of the CPU registers by pt_regs names\n"
		  "(regs.ax, regs.rax and regs[\"ax\"] are one); see emu/cpu.py.",
	.tp_basicsize = sizeof(PtRegsObject),
	.tp_flags = Py_TPFLAGS_DEFAULT,
	.tp_new = pr_new,
	.tp_dealloc = (destructor)pr_dealloc,
	.tp_setattro = pr_setattro,
	.tp_getset = pr_getset,
	.tp_repr = (reprfunc)pr_repr,
	.tp_as_mapping = &pr_mapping,
	.tp_methods = pr_methods,
};

/* -- the C API (emu/kpemu.h) for C trap handlers ------------------------- */

/* A view as a trap hands it over: ip and flags as trapped, nothing else read,
 * nothing to write. */
static void view_at_trap(PtRegsObject *r, uint64_t ip, uint64_t flags)
{
	r->val[REG_IP] = ip;
	r->val[REG_FLAGS] = flags;
	r->valid = (1u << REG_IP) | (1u << REG_FLAGS);
	r->dirty = 0;
}

static PyObject *api_regs_at_trap(PyObject *regfile, uint64_t ip, uint64_t flags)
{
	PtRegsObject *r;

	if (!PyObject_TypeCheck(regfile, &RegFileType)) {
		PyErr_SetString(PyExc_TypeError, "regs_at_trap needs an emu._fastpath.RegFile");
		return NULL;
	}
	r = view_new(regfile);
	if (r == NULL)
		return NULL;
	view_at_trap(r, ip, flags);
	return (PyObject *)r;
}

static PyObject *api_regs_again(PyObject *regfile, PyObject *regs, uint64_t ip,
				uint64_t flags)
{
	PtRegsObject *r = (PtRegsObject *)regs;

	if (!Py_IS_TYPE(regs, &PtRegsType) || Py_REFCNT(regs) != 1 ||
	    (PyObject *)r->rf != regfile)
		return NULL;
	view_at_trap(r, ip, flags);
	return Py_NewRef(regs);
}

static int api_regs_trap_return(PyObject *regs, uint64_t *ip, uint64_t *flags)
{
	PtRegsObject *r = (PtRegsObject *)regs;

	if (!PyObject_TypeCheck(regs, &PtRegsType)) {
		PyErr_SetString(PyExc_TypeError, "regs_trap_return needs a PtRegs");
		return -1;
	}
	*ip = reg_get(r, REG_IP);
	*flags = reg_get(r, REG_FLAGS);
	r->dirty &= ~((1u << REG_IP) | (1u << REG_FLAGS));
	pr_write_dirty(r);
	return 0;
}

/* The CPU behind a RegFile, natively, for C callers: a register by Unicorn id,
 * and 64-bit guest-virtual reads and writes.  0, or -1 with no exception set
 * (not a RegFile, an unmapped address): the caller falls back to its Python
 * path, which reports the fault. */
static int api_reg_read(PyObject *regfile, int regid, uint64_t *out)
{
	RegFile *rf = (RegFile *)regfile;

	if (!PyObject_TypeCheck(regfile, &RegFileType))
		return -1;
	*out = 0;		/* EFLAGS and selectors fill only part of it */
	return rf->reg_read(rf->uc, regid, out) == 0 ? 0 : -1;
}

static int api_vmem_read_u64(PyObject *regfile, uint64_t va, uint64_t *out)
{
	RegFile *rf = (RegFile *)regfile;

	if (!PyObject_TypeCheck(regfile, &RegFileType) || rf->vmem_read == NULL)
		return -1;
	return rf->vmem_read(rf->uc, va, UC_PROT_READ, out, 8) == 0 ? 0 : -1;
}

static int api_vmem_write_u64(PyObject *regfile, uint64_t va, uint64_t value)
{
	RegFile *rf = (RegFile *)regfile;

	if (!PyObject_TypeCheck(regfile, &RegFileType) || rf->vmem_write == NULL)
		return -1;
	return rf->vmem_write(rf->uc, va, UC_PROT_WRITE, &value, 8) == 0 ? 0 : -1;
}

static struct kpemu_api c_api = {
	.regs_at_trap = api_regs_at_trap,
	.regs_again = api_regs_again,
	.regs_trap_return = api_regs_trap_return,
	.trap_result = python_result,
	.reg_read = api_reg_read,
	.vmem_read_u64 = api_vmem_read_u64,
	.vmem_write_u64 = api_vmem_write_u64,
};

static int init_reg_index(void)
{
	size_t i, n = 0;

	reg_index = PyDict_New();
	if (reg_index == NULL)
		return -1;
	for (i = 0; i < NREGS; i++) {
		PyObject *idx = PyLong_FromSize_t(i);

		reg_name_objs[i] = PyUnicode_InternFromString(reg_names[i]);
		if (idx == NULL || reg_name_objs[i] == NULL ||
		    PyDict_SetItem(reg_index, reg_name_objs[i], idx) < 0) {
			Py_XDECREF(idx);
			return -1;
		}
		Py_DECREF(idx);
	}
	for (i = 0; i < sizeof(reg_aliases) / sizeof(reg_aliases[0]); i++) {
		PyObject *idx = PyDict_GetItemString(reg_index, reg_aliases[i][1]);

		if (idx == NULL || PyDict_SetItemString(reg_index, reg_aliases[i][0], idx) < 0)
			return -1;
	}
	/* the getset table, filled before PyType_Ready reads it */
	for (i = 0; i < NREGS; i++) {
		pr_getset[n].name = reg_names[i];
		pr_getset[n].get = (getter)pr_get;
		pr_getset[n].set = (setter)pr_set;
		pr_getset[n++].closure = (void *)(intptr_t)i;
	}
	for (i = 0; i < sizeof(reg_aliases) / sizeof(reg_aliases[0]); i++) {
		int target = (int)PyLong_AsLong(PyDict_GetItemString(reg_index, reg_aliases[i][1]));

		pr_getset[n].name = reg_aliases[i][0];
		pr_getset[n].get = (getter)pr_get;
		pr_getset[n].set = (setter)pr_set;
		pr_getset[n++].closure = (void *)(intptr_t)target;
	}
	return 0;
}

/*
 * The register names, exported so that Python has no list of its own:
 * REG_NAMES (the canonical names in pt_regs order) and REG_ALIASES (2.6-era
 * spelling -> canonical name).  emu/cpu.py re-exports both.
 */
static int add_reg_tables(PyObject *m)
{
	PyObject *names, *aliases;
	size_t i;
	int ret;

	names = PyTuple_New(NREGS);
	if (names == NULL)
		return -1;
	for (i = 0; i < NREGS; i++)
		PyTuple_SET_ITEM(names, i, Py_NewRef(reg_name_objs[i]));
	ret = PyModule_AddObjectRef(m, "REG_NAMES", names);
	Py_DECREF(names);
	if (ret < 0)
		return -1;
	aliases = PyDict_New();
	if (aliases == NULL)
		return -1;
	for (i = 0; i < sizeof(reg_aliases) / sizeof(reg_aliases[0]); i++) {
		PyObject *name = PyUnicode_FromString(reg_aliases[i][1]);

		if (name == NULL || PyDict_SetItemString(aliases, reg_aliases[i][0], name) < 0) {
			Py_XDECREF(name);
			Py_DECREF(aliases);
			return -1;
		}
		Py_DECREF(name);
	}
	ret = PyModule_AddObjectRef(m, "REG_ALIASES", aliases);
	Py_DECREF(aliases);
	return ret;
}

/* -- module -------------------------------------------------------------- */

static PyObject *icount_hook_address(PyObject *self, PyObject *unused)
{
	return PyLong_FromVoidPtr((void *)kpemu_icount_hook);
}

static PyObject *guard_hook_address(PyObject *self, PyObject *unused)
{
	return PyLong_FromVoidPtr((void *)kpemu_guard_hook);
}

static PyObject *block_hook_address(PyObject *self, PyObject *unused)
{
	return PyLong_FromVoidPtr((void *)kpemu_block_hook);
}

static PyObject *icount_struct_size(PyObject *self, PyObject *unused)
{
	return PyLong_FromSize_t(sizeof(struct kpemu_icount));
}

static PyObject *intr_hook_address(PyObject *self, PyObject *unused)
{
	return PyLong_FromVoidPtr((void *)kpemu_intr_hook);
}

static PyMethodDef methods[] = {
	{"icount_hook_address", icount_hook_address, METH_NOARGS,
	 "Address of the C UC_HOOK_CODE callback that counts instructions."},
	{"guard_hook_address", guard_hook_address, METH_NOARGS,
	 "Address of the C UC_HOOK_MEM_FETCH_UNMAPPED callback of the hooks that guard code\n"
	 "pages (it never fires); user_data is a BlockClock's user_data."},
	{"block_hook_address", block_hook_address, METH_NOARGS,
	 "Address of the C UC_HOOK_BLOCK callback that counts blocks; user_data is a\n"
	 "BlockClock's user_data."},
	{"icount_struct_size", icount_struct_size, METH_NOARGS,
	 "sizeof(struct kpemu_icount), checked against the ctypes mirror."},
	{"intr_hook_address", intr_hook_address, METH_NOARGS,
	 "Address of the C UC_HOOK_INTR callback; its user_data is an InterruptHook."},
	{NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
	PyModuleDef_HEAD_INIT, "_fastpath",
	"kpemu's C: instruction counter, interrupt register traffic, the pt_regs view "
	"(see _fastpath.c).", -1, methods,
};

PyMODINIT_FUNC PyInit__fastpath(void)
{
	PyObject *m, *api;

	if (init_reg_index() < 0 || PyType_Ready(&InterruptHookType) < 0 ||
	    PyType_Ready(&BlockClockType) < 0 ||
	    PyType_Ready(&CTrapHandlerType) < 0 ||
	    PyType_Ready(&RegFileType) < 0 || PyType_Ready(&PtRegsType) < 0)
		return NULL;
	m = PyModule_Create(&module);
	if (m == NULL)
		return NULL;
	if (PyModule_AddObjectRef(m, "InterruptHook", (PyObject *)&InterruptHookType) < 0 ||
	    PyModule_AddObjectRef(m, "BlockClock", (PyObject *)&BlockClockType) < 0 ||
	    PyModule_AddObjectRef(m, "CTrapHandler", (PyObject *)&CTrapHandlerType) < 0 ||
	    PyModule_AddObjectRef(m, "RegFile", (PyObject *)&RegFileType) < 0 ||
	    PyModule_AddObjectRef(m, "PtRegs", (PyObject *)&PtRegsType) < 0 ||
	    PyModule_AddIntConstant(m, "X86_EFLAGS_TF", X86_EFLAGS_TF) < 0 ||
	    PyModule_AddIntConstant(m, "X86_EFLAGS_IF", X86_EFLAGS_IF) < 0 ||
	    PyModule_AddIntConstant(m, "X86_EFLAGS_NT", X86_EFLAGS_NT) < 0 ||
	    PyModule_AddIntConstant(m, "X86_EFLAGS_RF", X86_EFLAGS_RF) < 0 ||
	    add_reg_tables(m) < 0)
		goto fail;
	api = PyCapsule_New(&c_api, KPEMU_API_CAPSULE, NULL);
	if (api == NULL || PyModule_AddObject(m, "_C_API", api) < 0) {
		Py_XDECREF(api);
		goto fail;
	}
	return m;
fail:
	Py_DECREF(m);
	return NULL;
}
