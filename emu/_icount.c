/*
 * The guest clock's counter: a Unicorn UC_HOOK_CODE callback written in C.
 *
 * kpemu's clock is the number of guest instructions executed.  Unicorn can
 * count on its own (emu_start's `count`), but that counter can be neither read
 * nor adjusted while the guest runs, and kpemu needs both: a PIT programmed by
 * an OUT records the count at that OUT, rdtsc returns it, and work done on the
 * guest's behalf (a kprobe's int3, code a handler runs) must be taken back out.
 * So the counter lives in a struct the host reads and writes through ctypes,
 * and this callback, called by Unicorn before every instruction, does exactly
 * what Unicorn's own count hook does: count, or stop before the instruction
 * once the deadline is reached (Unicorn checks for a stop request right after
 * a code hook, so the instruction does not run).
 *
 * Cost: one C call per instruction, the same as emu_start(count=N).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

struct kpemu_icount {
	uint64_t executed;		/* guest instructions executed */
	uint64_t deadline;		/* stop before an instruction once executed >= deadline */
	int (*emu_stop)(void *uc);	/* uc_emu_stop, filled in by the host */
	uint64_t stops;			/* how many stops this hook requested */
};

static void kpemu_icount_hook(void *uc, uint64_t address, uint32_t size,
			      void *user_data)
{
	struct kpemu_icount *c = user_data;

	(void)address;
	(void)size;
	if (c->executed >= c->deadline) {
		c->stops++;
		c->emu_stop(uc);
		return;
	}
	c->executed++;
}

static PyObject *hook_address(PyObject *self, PyObject *unused)
{
	return PyLong_FromVoidPtr((void *)kpemu_icount_hook);
}

static PyObject *struct_size(PyObject *self, PyObject *unused)
{
	return PyLong_FromSize_t(sizeof(struct kpemu_icount));
}

static PyMethodDef methods[] = {
	{"hook_address", hook_address, METH_NOARGS,
	 "Address of the C UC_HOOK_CODE callback that counts instructions."},
	{"struct_size", struct_size, METH_NOARGS,
	 "sizeof(struct kpemu_icount), checked against the ctypes mirror."},
	{NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
	PyModuleDef_HEAD_INIT, "_icount",
	"Instruction-count clock hook for kpemu (see _icount.c).", -1, methods,
};

PyMODINIT_FUNC PyInit__icount(void)
{
	return PyModule_Create(&module);
}
