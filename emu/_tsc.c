/*
 * The time-stamp counter, read from the guest clock: Unicorn callbacks for
 * rdtsc and rdtscp (UC_HOOK_INSN) that give the guest the instruction count
 * (struct kpemu_icount, emu/kpemu.h) instead of the host's TSC.
 *
 * In C because Linux reads the TSC a few hundred thousand times in a boot (its
 * clocksource, delay loops, sched_clock): a Python callback per read costs
 * about a third of the boot's time.  rdtscp also loads ECX with IA32_TSC_AUX,
 * which Linux sets to its CPU (and node) number and reads back in getcpu; it is
 * read from the CPU's MSR, as the instruction does.
 *
 * rdtsc sets RIP to itself before the callback, so inside a block the clock
 * counts whole (emu/_fastpath.c) the count is made exact at it first.
 *
 * A callback returns 1: Unicorn then skips the instruction's own helper (which
 * would read the host TSC).  Nothing is linked against libunicorn: the host
 * passes the addresses of uc_reg_read and uc_reg_write in struct kpemu_tsc.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

typedef int (*uc_reg_fn)(void *uc, int regid, void *value);
#include "kpemu.h"

#define MSR_TSC_AUX 0xc0000103u

struct kpemu_tsc {
	struct kpemu_icount *icount;	/* the guest clock */
	uc_reg_fn reg_read;
	uc_reg_fn reg_write;
	int rax_id, rdx_id, rcx_id;	/* UC_X86_REG_RAX, _RDX, _RCX */
	int msr_id;			/* UC_X86_REG_MSR */
};

/* Unicorn's struct uc_x86_msr, what UC_X86_REG_MSR reads. */
struct uc_x86_msr {
	uint32_t rid;
	uint64_t value;
};

static void load_edx_eax(void *uc, const struct kpemu_tsc *t)
{
	uint64_t now, lo, hi;

	if (t->icount->block != NULL)	/* inside a block counted whole */
		t->icount->sync(uc, t->icount);
	now = t->icount->executed;
	lo = now & 0xffffffffu;
	hi = now >> 32;

	t->reg_write(uc, t->rax_id, &lo);
	t->reg_write(uc, t->rdx_id, &hi);
}

static uint32_t kpemu_rdtsc_hook(void *uc, void *user_data)
{
	load_edx_eax(uc, user_data);
	return 1;
}

static uint32_t kpemu_rdtscp_hook(void *uc, void *user_data)
{
	const struct kpemu_tsc *t = user_data;
	struct uc_x86_msr msr = {MSR_TSC_AUX, 0};
	uint64_t aux;

	load_edx_eax(uc, t);
	t->reg_read(uc, t->msr_id, &msr);
	aux = (uint32_t)msr.value;
	t->reg_write(uc, t->rcx_id, &aux);
	return 1;
}

static PyObject *rdtsc_hook_address(PyObject *self, PyObject *unused)
{
	return PyLong_FromVoidPtr((void *)kpemu_rdtsc_hook);
}

static PyObject *rdtscp_hook_address(PyObject *self, PyObject *unused)
{
	return PyLong_FromVoidPtr((void *)kpemu_rdtscp_hook);
}

static PyObject *tsc_struct_size(PyObject *self, PyObject *unused)
{
	return PyLong_FromSize_t(sizeof(struct kpemu_tsc));
}

static PyMethodDef methods[] = {
	{"rdtsc_hook_address", rdtsc_hook_address, METH_NOARGS,
	 "Address of the C UC_HOOK_INSN callback for rdtsc; user_data is a struct kpemu_tsc."},
	{"rdtscp_hook_address", rdtscp_hook_address, METH_NOARGS,
	 "Address of the C UC_HOOK_INSN callback for rdtscp (ECX = IA32_TSC_AUX)."},
	{"tsc_struct_size", tsc_struct_size, METH_NOARGS,
	 "sizeof(struct kpemu_tsc), checked against the ctypes mirror."},
	{NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
	PyModuleDef_HEAD_INIT, "_tsc",
	"rdtsc/rdtscp from kpemu's instruction clock (see _tsc.c).", -1, methods,
};

PyMODINIT_FUNC PyInit__tsc(void)
{
	return PyModule_Create(&module);
}
