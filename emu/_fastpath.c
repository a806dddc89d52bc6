/*
 * kpemu's two Unicorn callbacks written in C: the guest clock's counter and the
 * interrupt hook's register traffic.  Both are mechanism only -- what an
 * interrupt means is decided in Python (emu/machine.py, and kprobes through its
 * trap table); this file knows neither x86 vectors nor kprobes.
 *
 * 1. The instruction counter (UC_HOOK_CODE on all code).
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
 * Cost: one C call per instruction, the same as emu_start(count=N).
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
 * nothing (nothing changed, or the handler wrote registers itself).  The table is the host's own dict of lists,
 * read afresh at every interrupt, so registering a handler needs no call here.
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
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

typedef int (*uc_reg_fn)(void *uc, int regid, void *value);
typedef int (*uc_stop_fn)(void *uc);

/* -- 1. the instruction counter ------------------------------------------ */

struct kpemu_icount {
	uint64_t executed;		/* guest instructions executed */
	uint64_t deadline;		/* stop before an instruction once executed >= deadline */
	uc_stop_fn emu_stop;		/* uc_emu_stop, filled in by the host */
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

/* The handlers of table[vector] in order, then the fallback: a new reference to
 * the first true result (or to the fallback's result), NULL with an exception
 * set when one raised.  args[-1] is scratch space (PY_VECTORCALL_ARGUMENTS_OFFSET:
 * a bound method then needs no new argument array). */
static PyObject *dispatch(InterruptHook *h, PyObject **args)
{
	const size_t nargsf = 3 | PY_VECTORCALL_ARGUMENTS_OFFSET;
	PyObject *handlers, *res;
	Py_ssize_t i;

	if (h->table == NULL || h->fallback == NULL) {	/* cleared by the GC */
		PyErr_SetString(PyExc_RuntimeError, "kpemu: interrupt hook used after its engine");
		return NULL;
	}
	handlers = PyDict_GetItemWithError(h->table, args[0]);
	if (handlers == NULL && PyErr_Occurred())
		return NULL;
	if (handlers != NULL && PyList_Check(handlers)) {
		Py_INCREF(handlers);
		/* Like a Python for loop: the list may change under a handler. */
		for (i = 0; i < PyList_GET_SIZE(handlers); i++) {
			PyObject *fn = PyList_GET_ITEM(handlers, i);
			int claimed;

			Py_INCREF(fn);
			res = PyObject_Vectorcall(fn, args, nargsf, NULL);
			Py_DECREF(fn);
			if (res == NULL) {
				Py_DECREF(handlers);
				return NULL;
			}
			claimed = PyObject_IsTrue(res);
			if (claimed != 0) {
				Py_DECREF(handlers);
				if (claimed < 0)
					Py_CLEAR(res);
				return res;
			}
			Py_DECREF(res);
		}
		Py_DECREF(handlers);
	}
	return PyObject_Vectorcall(h->fallback, args, nargsf, NULL);
}

static void kpemu_intr_hook(void *uc, uint32_t intno, void *user_data)
{
	InterruptHook *h = user_data;
	uint64_t ip = 0, flags = 0;	/* zeroed: EFLAGS reads fill only 4 bytes */
	PyGILState_STATE gil;
	PyObject *argv[4] = {NULL}, **args = argv + 1, *res = NULL;

	h->reg_read(uc, h->ip_id, &ip);
	h->reg_read(uc, h->flags_id, &flags);

	gil = PyGILState_Ensure();
	h->calls++;
	Py_INCREF(h);			/* a handler may drop the last other reference */
	args[0] = PyLong_FromUnsignedLong(intno);
	args[1] = PyLong_FromUnsignedLongLong(ip);
	args[2] = PyLong_FromUnsignedLongLong(flags);
	if (args[0] != NULL && args[1] != NULL && args[2] != NULL)
		res = dispatch(h, args);
	Py_XDECREF(args[0]);
	Py_XDECREF(args[1]);
	Py_XDECREF(args[2]);

	if (res == NULL) {
		keep_error(h);
	} else if (PyTuple_Check(res) && PyTuple_GET_SIZE(res) == 2) {
		uint64_t new_ip, new_flags;

		new_ip = PyLong_AsUnsignedLongLongMask(PyTuple_GET_ITEM(res, 0));
		new_flags = PyLong_AsUnsignedLongLongMask(PyTuple_GET_ITEM(res, 1));
		if (PyErr_Occurred()) {
			keep_error(h);
		} else {
			/* Compared with the CPU as it is now, not as trapped: a
			 * handler may have run guest code (nested emu_start). */
			flags = 0;	/* EFLAGS reads fill only 4 bytes */
			h->reg_read(uc, h->flags_id, &flags);
			if (new_flags != flags)
				h->reg_write(uc, h->flags_id, &new_flags);
			ip = 0;
			h->reg_read(uc, h->ip_id, &ip);
			if (new_ip != ip)
				h->reg_write(uc, h->ip_id, &new_ip);
		}
	}
	Py_XDECREF(res);
	Py_DECREF(h);
	PyGILState_Release(gil);
}

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

/* -- module -------------------------------------------------------------- */

static PyObject *icount_hook_address(PyObject *self, PyObject *unused)
{
	return PyLong_FromVoidPtr((void *)kpemu_icount_hook);
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
	{"icount_struct_size", icount_struct_size, METH_NOARGS,
	 "sizeof(struct kpemu_icount), checked against the ctypes mirror."},
	{"intr_hook_address", intr_hook_address, METH_NOARGS,
	 "Address of the C UC_HOOK_INTR callback; its user_data is an InterruptHook."},
	{NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
	PyModuleDef_HEAD_INIT, "_fastpath",
	"kpemu's C Unicorn callbacks: instruction counter, interrupt register traffic "
	"(see _fastpath.c).", -1, methods,
};

PyMODINIT_FUNC PyInit__fastpath(void)
{
	PyObject *m;

	if (PyType_Ready(&InterruptHookType) < 0)
		return NULL;
	m = PyModule_Create(&module);
	if (m == NULL)
		return NULL;
	Py_INCREF(&InterruptHookType);
	if (PyModule_AddObject(m, "InterruptHook", (PyObject *)&InterruptHookType) < 0) {
		Py_DECREF(&InterruptHookType);
		Py_DECREF(m);
		return NULL;
	}
	return m;
}
