/*
 * kprobes, x86_64: the trap path of the plain hit, in C.
 *
 * kprobes/arch/x86_64.py holds the whole 2.6.13 trap path in Python
 * (kprobe_handler for the int3, post_kprobe_handler for the #DB after the
 * single-step) and is the reference.  Measured, a hit with no-op handlers
 * costs 4.6 us there against 1.0 us for a bare Unicorn code hook calling the
 * same handlers, and most of it is Python bookkeeping around the handlers:
 * the kprobe_status machine, the saved flags, the clock discount, the
 * counters, the resume fix-up of ip, two Python frames between Unicorn and
 * the handlers.  This file does exactly that bookkeeping, and nothing else,
 * for the case that covers almost every hit (1.2 us):
 *
 *   int3 (vector 3): a probe at ip - 1, kprobes not already running, the probe
 *       enabled, nobody observing (Machine.observers empty);
 *   #DB (vector 1): the single-step of such a hit (KPROBE_HIT_SS), an
 *       instruction whose resume fix-up touches only ip ("relocate", "ret",
 *       "jmp-indirect"), the guest itself not single-stepping, nobody
 *       observing.
 *
 * Everything else -- a foreign or vanished int3, re-entry, a disabled probe,
 * a fix-up of the stack (pushf, call), the old return-probe trampoline, a
 * handler that raised -- goes to the Python methods of the same object, so
 * there is one implementation of each of those and one per-CPU state: the
 * fields below are the `running`, `status`, `current_kprobe`, `old_flags`
 * and `saved_flags` the Python code reads and writes (ArchKprobes derives
 * from TrapState).  The user's handlers are called with the same pt_regs view
 * (emu.cpu.PtRegs, through emu's C API) in the same order as in Python.
 *
 * Context: ts_int3 and ts_debug are C trap handlers (emu/kpemu.h), called by
 * the engine's interrupt hook with the GIL held and ip and flags as trapped;
 * ArchKprobes puts them in the machine's trap table as CTrapHandlers.  A
 * user's handler may run guest code (m.call) and so re-enter kprobes: what
 * Python may change meanwhile (the state above) is read back after the call,
 * never kept in C locals.
 *
 * `fastpath = False` sends every trap to Python (the tests run both ways).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>

#include "../../emu/kpemu.h"

#define X86_EFLAGS_TF 0x100ULL
#define X86_EFLAGS_IF 0x200ULL

/* kprobe_status values, as in kprobes/arch/x86_64.py */
#define KPROBE_HIT_ACTIVE 0x1
#define KPROBE_HIT_SS 0x2
#define KPROBE_REENTER 0x4
#define KPROBE_HIT_SSDONE 0x8

typedef struct {
	PyObject_HEAD
	/* the per-CPU state of 2.6.13, shared with the Python trap path */
	char running;			/* kprobe_running() */
	int status;			/* kprobe_status */
	PyObject *current_kprobe;	/* None when not running */
	unsigned long long old_flags;	/* kprobe_old_rflags: TF|IF when trapped */
	unsigned long long saved_flags;	/* kprobe_saved_rflags */
	/* counters */
	unsigned long long n_int3;	/* int3 traps taken for a probe */
	unsigned long long n_debug;	/* #DB traps after a single-step */
	unsigned long long fast_hits;	/* hits whose int3 this file handled */
	char fastpath;
	/* the hit the C int3 started, for the C #DB: what it needs of the probe */
	PyObject *hit_probe;		/* the probe (a strong reference), or NULL */
	unsigned long long hit_addr;	/* probe address */
	unsigned long long hit_slot;	/* its instruction slot */
	PyObject *hit_resume;		/* ainsn.resume (borrowed: one of the three below) */
	/* set by setup_fastpath() */
	PyObject *table;		/* dict: probe address -> Kprobe */
	PyObject *observers;		/* the Machine's observers list */
	PyObject *regfile;		/* the engine's RegFile, for pt_regs views */
	PyObject *core;			/* the Kprobes object (curr_kprobe) */
	PyObject *resume_relocate;	/* the resume action objects of ainsn.resume */
	PyObject *resume_ret;
	PyObject *resume_jmp_abs;
	PyObject *counter_owner;	/* keeps the counter struct alive */
	struct kpemu_icount *counter;
} TrapState;

static PyObject *s_kprobe_handler, *s_post_kprobe_handler, *s_pre_handler_raised,
	*s_handler_raised, *s_disabled, *s_ainsn, *s_slot, *s_if_modifier, *s_resume,
	*s_pre_handler, *s_post_handler, *s_resume_in_post_handler, *s_curr_kprobe, *zero;

static struct kpemu_api *api;		/* emu's pt_regs view, for C callers */

/* -- helpers -------------------------------------------------------------- */

/* The Python method `name` of s with the trap's arguments (the slow path); its
 * False / True / (ip, flags) as a KPEMU_TRAP_* code. */
static int to_python(TrapState *s, PyObject *name, unsigned int vector, uint64_t *ip,
		     uint64_t *flags)
{
	/* argv[0] is scratch space the callee may use (PY_VECTORCALL_ARGUMENTS_OFFSET) */
	PyObject *argv[5] = {NULL, (PyObject *)s, NULL, NULL, NULL}, *res = NULL;

	argv[2] = PyLong_FromUnsignedLong(vector);
	argv[3] = PyLong_FromUnsignedLongLong(*ip);
	argv[4] = PyLong_FromUnsignedLongLong(*flags);
	if (argv[2] != NULL && argv[3] != NULL && argv[4] != NULL)
		res = PyObject_VectorcallMethod(name, argv + 1,
						4 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
	Py_XDECREF(argv[2]);
	Py_XDECREF(argv[3]);
	Py_XDECREF(argv[4]);
	return api->trap_result(res, ip, flags);
}

/* obj.name as an unsigned 64-bit value (-1 and an exception on failure). */
static int attr_u64(PyObject *obj, PyObject *name, uint64_t *out)
{
	PyObject *v = PyObject_GetAttr(obj, name);

	if (v == NULL)
		return -1;
	*out = PyLong_AsUnsignedLongLongMask(v);
	Py_DECREF(v);
	return PyErr_Occurred() ? -1 : 0;
}

static int attr_true(PyObject *obj, PyObject *name)
{
	PyObject *v = PyObject_GetAttr(obj, name);
	int r;

	if (v == NULL)
		return -1;
	r = PyObject_IsTrue(v);
	Py_DECREF(v);
	return r;
}

static PyObject *fetch_exception(void)
{
	PyObject *type, *value, *tb;

	PyErr_Fetch(&type, &value, &tb);
	PyErr_NormalizeException(&type, &value, &tb);
	if (value != NULL && tb != NULL)
		PyException_SetTraceback(value, tb);
	Py_XDECREF(type);
	Py_XDECREF(tb);
	return value;
}

static void unlock(TrapState *s)
{
	s->running = 0;
	s->status = 0;
	Py_INCREF(Py_None);
	Py_SETREF(s->current_kprobe, Py_None);
	Py_CLEAR(s->hit_probe);
}

static int observed(TrapState *s)
{
	return s->observers == NULL || PyList_GET_SIZE(s->observers) > 0;
}

/* -- int3 ------------------------------------------------------------------ */

/* Like kprobe_handler() in kprobes/arch/x86_64.py, for the plain hit. */
static int ts_int3(PyObject *owner, unsigned int vector, uint64_t *ip, uint64_t *flags)
{
	TrapState *s = (TrapState *)owner;
	uint64_t addr = *ip - 1, slot;
	PyObject *key, *p, *ainsn = NULL, *pre = NULL, *regs = NULL, *res = NULL;
	PyObject *resume = NULL;
	int disabled, if_modifier, in_post, changed, code = -1;

	if (!s->fastpath || s->running || s->table == NULL || observed(s))
		return to_python(s, s_kprobe_handler, vector, ip, flags);
	key = PyLong_FromUnsignedLongLong(addr);
	if (key == NULL)
		return -1;
	p = PyDict_GetItemWithError(s->table, key);
	Py_DECREF(key);
	if (p == NULL) {
		if (PyErr_Occurred())
			return -1;
		return to_python(s, s_kprobe_handler, vector, ip, flags);	/* not ours */
	}
	Py_INCREF(p);
	disabled = attr_true(p, s_disabled);
	if (disabled != 0) {
		Py_DECREF(p);
		return disabled < 0 ? -1 : to_python(s, s_kprobe_handler, vector, ip, flags);
	}
	ainsn = PyObject_GetAttr(p, s_ainsn);
	if (ainsn == NULL || attr_u64(ainsn, s_slot, &slot) < 0 ||
	    (if_modifier = attr_true(ainsn, s_if_modifier)) < 0 ||
	    (resume = PyObject_GetAttr(ainsn, s_resume)) == NULL ||
	    (in_post = attr_true(p, s_resume_in_post_handler)) < 0 ||
	    (pre = PyObject_GetAttr(p, s_pre_handler)) == NULL)
		goto out;

	/* The hit is ours from here on: the state the Python path sets up. */
	s->counter->executed--;		/* the int3 ran for us, not for the guest */
	s->counter->hidden++;
	s->n_int3++;
	s->fast_hits++;
	s->running = 1;
	s->status = KPROBE_HIT_ACTIVE;
	Py_INCREF(p);
	Py_SETREF(s->current_kprobe, p);
	/* The #DB of this hit stays in C when its fix-up touches only ip. */
	Py_CLEAR(s->hit_probe);
	if (!in_post && (resume == s->resume_relocate || resume == s->resume_ret ||
			 resume == s->resume_jmp_abs)) {
		Py_INCREF(p);
		s->hit_probe = p;
		s->hit_addr = addr;
		s->hit_slot = slot;
		s->hit_resume = resume;
	}
	s->old_flags = s->saved_flags = *flags & (X86_EFLAGS_TF | X86_EFLAGS_IF);
	if (if_modifier)
		s->saved_flags &= ~X86_EFLAGS_IF;

	if (pre != Py_None) {
		PyObject *argv[2];

		regs = api->regs_at_trap(s->regfile, *ip, *flags);
		if (regs == NULL)
			goto out;
		argv[0] = p;
		argv[1] = regs;
		res = PyObject_Vectorcall(pre, argv, 2, NULL);
		if (res == NULL) {
			/* The Python path's handling: the fault handler, or re-raise
			 * with the guest put back before the int3. */
			PyObject *exc = fetch_exception();

			res = PyObject_CallMethodObjArgs((PyObject *)s, s_pre_handler_raised,
							 p, regs, exc, NULL);
			Py_XDECREF(exc);
			if (res == NULL)
				goto out;
		}
		changed = PyObject_IsTrue(res);
		if (changed < 0 || api->regs_trap_return(regs, ip, flags) < 0)
			goto out;
		if (changed) {
			/* The handler moved ip: no single-step. */
			if (PyObject_SetAttr(s->core, s_curr_kprobe, Py_None) < 0)
				goto out;
			unlock(s);
			code = KPEMU_TRAP_RESUME;
			goto out;
		}
	}
	/* prepare_singlestep(): TF on, IF off, ip at the copy. */
	s->status = KPROBE_HIT_SS;
	*ip = slot;
	*flags = (*flags | X86_EFLAGS_TF) & ~X86_EFLAGS_IF;
	code = KPEMU_TRAP_RESUME;
out:
	Py_XDECREF(res);
	Py_XDECREF(regs);
	Py_XDECREF(pre);
	Py_XDECREF(resume);
	Py_XDECREF(ainsn);
	Py_DECREF(p);
	return code;
}

/* -- #DB ------------------------------------------------------------------- */

/* Like post_kprobe_handler() in kprobes/arch/x86_64.py, for the plain step. */
static int ts_debug(PyObject *owner, unsigned int vector, uint64_t *ip, uint64_t *flags)
{
	TrapState *s = (TrapState *)owner;
	PyObject *p, *post = NULL, *regs = NULL, *res, *error = NULL, *out_res;
	int disabled, code = -1;

	/* Only the step of a hit the C int3 started, and still that hit: a handler
	 * may have re-entered kprobes (Python restores the outer state) or
	 * attached an observer. */
	if (!s->fastpath || !s->running || s->status != KPROBE_HIT_SS ||
	    s->hit_probe == NULL || s->hit_probe != s->current_kprobe ||
	    (s->saved_flags & X86_EFLAGS_TF) || observed(s))
		return to_python(s, s_post_kprobe_handler, vector, ip, flags);
	p = s->hit_probe;
	Py_INCREF(p);
	if ((post = PyObject_GetAttr(p, s_post_handler)) == NULL ||
	    (disabled = attr_true(p, s_disabled)) < 0)
		goto out;

	s->n_debug++;
	/* 1. the post_handler, with regs.ip still in the slot */
	if (post != Py_None && !disabled) {
		PyObject *argv[3];

		s->status = KPROBE_HIT_SSDONE;
		regs = api->regs_at_trap(s->regfile, *ip, *flags);
		if (regs == NULL)
			goto out;
		argv[0] = p;
		argv[1] = regs;
		argv[2] = zero;
		res = PyObject_Vectorcall(post, argv, 3, NULL);
		if (res == NULL) {
			/* finish the step first, then re-raise (as the Python path) */
			PyObject *exc = fetch_exception();
			int handled;

			res = PyObject_CallMethodObjArgs((PyObject *)s, s_handler_raised, p,
							 s_post_handler, regs, exc, NULL);
			handled = res == NULL ? -1 : PyObject_IsTrue(res);
			if (handled == 0) {
				error = exc;
			} else {
				Py_XDECREF(exc);
				if (handled < 0) {
					Py_XDECREF(res);
					goto out;
				}
			}
		}
		Py_XDECREF(res);
		if (PyObject_SetAttr(s->core, s_curr_kprobe, Py_None) < 0 ||
		    api->regs_trap_return(regs, ip, flags) < 0)
			goto out;
	}
	/* 2. resume_execution(), the fix-ups that touch only ip; TF cleared */
	*flags &= ~X86_EFLAGS_TF;
	if (s->hit_resume == s->resume_relocate)
		*ip = s->hit_addr + (*ip - s->hit_slot);
	/* 3. the trapped context's TF and IF come back; 4. the state is released */
	*flags |= s->saved_flags;
	unlock(s);
	if (error != NULL) {
		out_res = PyObject_CallMethod((PyObject *)s, "_raise_after_step", "OKK", error,
					      (unsigned long long)*ip, (unsigned long long)*flags);
		Py_XDECREF(out_res);	/* it raised */
		if (!PyErr_Occurred())
			PyErr_SetString(PyExc_RuntimeError, "_raise_after_step returned");
		goto out;
	}
	if (*flags & X86_EFLAGS_TF) {
		/* 5. a handler set TF: the guest's own #DB takes the trap */
		out_res = PyObject_CallMethod((PyObject *)s, "_decline_debug", "KK",
					      (unsigned long long)*ip, (unsigned long long)*flags);
		if (out_res != NULL)
			code = KPEMU_TRAP_DECLINE;
		Py_XDECREF(out_res);
		goto out;
	}
	code = KPEMU_TRAP_RESUME;
out:
	Py_XDECREF(error);
	Py_XDECREF(regs);
	Py_XDECREF(post);
	Py_DECREF(p);
	return code;
}

static struct kpemu_trap_handler int3_handler = {ts_int3};
static struct kpemu_trap_handler debug_handler = {ts_debug};

/* -- the type ----------------------------------------------------------------- */

static PyObject *ts_setup_fastpath(TrapState *s, PyObject *args, PyObject *kwds)
{
	static char *kwlist[] = {"table", "observers", "regfile", "core", "resume_relocate",
				 "resume_ret", "resume_jmp_abs", "counter", NULL};
	PyObject *table, *observers, *regfile, *core, *rel, *ret, *jmp, *counter;
	Py_buffer view;

	if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!O!OOOOOO", kwlist, &PyDict_Type,
					 &table, &PyList_Type, &observers, &regfile, &core, &rel,
					 &ret, &jmp, &counter))
		return NULL;
	/* The clock's counter is a ctypes struct: its memory, through the buffer protocol. */
	if (PyObject_GetBuffer(counter, &view, PyBUF_SIMPLE) < 0)
		return NULL;
	if (view.len != (Py_ssize_t)sizeof(struct kpemu_icount)) {
		PyBuffer_Release(&view);
		PyErr_SetString(PyExc_TypeError, "counter must be the clock's kpemu_icount struct");
		return NULL;
	}
	s->counter = view.buf;	/* valid while counter_owner is held */
	PyBuffer_Release(&view);
#define KEEP(field, value) do { Py_INCREF(value); Py_XSETREF(s->field, value); } while (0)
	KEEP(table, table);
	KEEP(observers, observers);
	KEEP(regfile, regfile);
	KEEP(core, core);
	KEEP(resume_relocate, rel);
	KEEP(resume_ret, ret);
	KEEP(resume_jmp_abs, jmp);
	KEEP(counter_owner, counter);
#undef KEEP
	Py_RETURN_NONE;
}

static PyObject *ts_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
	TrapState *s = (TrapState *)type->tp_alloc(type, 0);

	if (s == NULL)
		return NULL;
	Py_INCREF(Py_None);
	s->current_kprobe = Py_None;
	s->fastpath = 1;
	return (PyObject *)s;
}

static int ts_traverse(TrapState *s, visitproc visit, void *arg)
{
	Py_VISIT(s->current_kprobe);
	Py_VISIT(s->hit_probe);
	Py_VISIT(s->table);
	Py_VISIT(s->observers);
	Py_VISIT(s->regfile);
	Py_VISIT(s->core);
	Py_VISIT(s->resume_relocate);
	Py_VISIT(s->resume_ret);
	Py_VISIT(s->resume_jmp_abs);
	Py_VISIT(s->counter_owner);
	return 0;
}

static int ts_clear(TrapState *s)
{
	Py_CLEAR(s->current_kprobe);
	Py_CLEAR(s->hit_probe);
	Py_CLEAR(s->table);
	Py_CLEAR(s->observers);
	Py_CLEAR(s->regfile);
	Py_CLEAR(s->core);
	Py_CLEAR(s->resume_relocate);
	Py_CLEAR(s->resume_ret);
	Py_CLEAR(s->resume_jmp_abs);
	/* counter_owner is kept: the counter must outlive any late trap */
	return 0;
}

/* A subclass's dealloc (ArchKprobes) untracks the object and drops its type's
 * reference itself, then calls this. */
static void ts_dealloc(TrapState *s)
{
	PyObject_GC_UnTrack(s);
	ts_clear(s);
	Py_CLEAR(s->counter_owner);
	Py_TYPE(s)->tp_free((PyObject *)s);
}

static PyMemberDef ts_members[] = {
	{"running", T_BOOL, offsetof(TrapState, running), 0, "kprobe_running()"},
	{"status", T_INT, offsetof(TrapState, status), 0, "kprobe_status"},
	{"current_kprobe", T_OBJECT, offsetof(TrapState, current_kprobe), 0,
	 "the probe being handled, or None"},
	{"old_flags", T_ULONGLONG, offsetof(TrapState, old_flags), 0,
	 "kprobe_old_rflags: TF|IF of the trapped context"},
	{"saved_flags", T_ULONGLONG, offsetof(TrapState, saved_flags), 0,
	 "kprobe_saved_rflags: the same, less IF for an IF modifier"},
	{"n_int3", T_ULONGLONG, offsetof(TrapState, n_int3), 0, "int3 traps taken for probes"},
	{"n_debug", T_ULONGLONG, offsetof(TrapState, n_debug), 0,
	 "#DB traps taken after single-steps"},
	{"hit_probe", T_OBJECT, offsetof(TrapState, hit_probe), 0,
	 "the probe whose hit the C int3 started (its #DB may stay in C), or None"},
	{"fast_hits", T_ULONGLONG, offsetof(TrapState, fast_hits), READONLY,
	 "hits whose int3 the C path handled"},
	{"fastpath", T_BOOL, offsetof(TrapState, fastpath), 0,
	 "False: every trap goes to the Python methods"},
	{NULL},
};

static PyMethodDef ts_methods[] = {
	{"setup_fastpath", (PyCFunction)(void (*)(void))ts_setup_fastpath,
	 METH_VARARGS | METH_KEYWORDS,
	 "setup_fastpath(table, observers, regfile, core, resume_relocate, resume_ret,\n"
	 "               resume_jmp_abs, counter)"},
	{NULL, NULL, 0, NULL},
};

static PyTypeObject TrapStateType = {
	PyVarObject_HEAD_INIT(NULL, 0)
	.tp_name = "kprobes.arch._x86_64_trap.TrapState",
	.tp_doc = "The per-CPU kprobes state and the C trap path of the plain hit "
		  "(see x86_64_trap.c); kprobes.arch.x86_64.ArchKprobes derives from it.",
	.tp_basicsize = sizeof(TrapState),
	.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
	.tp_new = ts_new,
	.tp_traverse = (traverseproc)ts_traverse,
	.tp_clear = (inquiry)ts_clear,
	.tp_dealloc = (destructor)ts_dealloc,
	.tp_members = ts_members,
	.tp_methods = ts_methods,
};

static struct PyModuleDef module = {
	PyModuleDef_HEAD_INIT, "_x86_64_trap",
	"kprobes' trap path for the plain hit, in C (see x86_64_trap.c).", -1, NULL,
};

static int intern(PyObject **slot, const char *text)
{
	*slot = PyUnicode_InternFromString(text);
	return *slot == NULL ? -1 : 0;
}

PyMODINIT_FUNC PyInit__x86_64_trap(void)
{
	PyObject *m, *int3, *debug;

	if (intern(&s_kprobe_handler, "kprobe_handler") ||
	    intern(&s_post_kprobe_handler, "post_kprobe_handler") ||
	    intern(&s_pre_handler_raised, "_pre_handler_raised") ||
	    intern(&s_handler_raised, "_handler_raised") ||
	    intern(&s_disabled, "disabled") ||
	    intern(&s_ainsn, "ainsn") || intern(&s_slot, "slot") ||
	    intern(&s_if_modifier, "if_modifier") || intern(&s_resume, "resume") ||
	    intern(&s_pre_handler, "pre_handler") || intern(&s_post_handler, "post_handler") ||
	    intern(&s_resume_in_post_handler, "resume_in_post_handler") ||
	    intern(&s_curr_kprobe, "curr_kprobe") || (zero = PyLong_FromLong(0)) == NULL)
		return NULL;
	api = PyCapsule_Import(KPEMU_API_CAPSULE, 0);
	if (api == NULL || PyType_Ready(&TrapStateType) < 0)
		return NULL;
	m = PyModule_Create(&module);
	if (m == NULL)
		return NULL;
	/* The C trap handlers, for emu._fastpath.CTrapHandler(capsule, trap_state). */
	int3 = PyCapsule_New(&int3_handler, KPEMU_TRAP_CAPSULE, NULL);
	if (int3 == NULL || PyModule_AddObject(m, "INT3", int3) < 0) {
		Py_XDECREF(int3);
		goto fail;
	}
	debug = PyCapsule_New(&debug_handler, KPEMU_TRAP_CAPSULE, NULL);
	if (debug == NULL || PyModule_AddObject(m, "DEBUG", debug) < 0) {
		Py_XDECREF(debug);
		goto fail;
	}
	if (PyModule_AddObjectRef(m, "TrapState", (PyObject *)&TrapStateType) < 0)
		goto fail;
	return m;
fail:
	Py_DECREF(m);
	return NULL;
}
