/*
 * kprobes, x86_64: the per-CPU kprobes state and the trap path of the plain
 * hit, in C (the extension kprobes.arch.x86_64._trap).
 *
 * trap.py beside this file holds the whole 2.6.13 trap path in Python
 * (kprobe_handler for the int3, post_kprobe_handler for the #DB after the
 * single-step) and is the reference.  This file does the same bookkeeping --
 * the kprobe_status machine, the saved flags, the clock discount, the
 * counters, the fix-up of ip -- around the user's handlers, for the case that
 * covers almost every hit:
 *
 *   int3 (vector 3): a probe at ip - 1, kprobes not already running, the probe
 *       enabled, nobody observing (Machine.observers empty);
 *   #DB (vector 1): the single-step of such a hit (KPROBE_HIT_SS), an
 *       instruction whose resume fix-up touches only ip (RESUME_RELOCATE,
 *       RESUME_RET, RESUME_JMP_ABS), the guest itself not single-stepping,
 *       nobody observing.
 *
 * The state: a KprobeCtlblk object (Linux's per-CPU current_kprobe and struct
 * kprobe_ctlblk) holds running, status, current_kprobe, old_flags,
 * saved_flags and the one-deep `prev` save area; both paths read and write
 * that one object, so there is one state whichever path a trap takes.
 *
 * The slow path, one protocol: the three callables a KprobeCtlblk is made
 * with, and nothing looked up by name.
 *
 *   slow_int3(vector, ip, flags)   every int3 this file does not take;
 *   slow_debug(vector, ip, flags)  every #DB this file does not take;
 *       both return like any trap handler: False (not ours), True, or the
 *       (ip, flags) to resume with;
 *   handler_raised(which, p, regs, exc, ip, flags)
 *       the user's pre_handler ("pre_handler") or post_handler
 *       ("post_handler") raised `exc`, with the trap's ip and flags; it takes
 *       the hit over from there -- the fault handler, the rest of the hit, the
 *       guest put back, the re-raise -- and returns like the two above.
 *
 * The constants both paths use are defined here once and exported to Python:
 * KPROBE_HIT_* (kprobe_status) and RESUME_* (the resume actions, the IntEnum
 * trap.Resume); the EFLAGS bits come from emu/kpemu.h.
 *
 * Context: ts_int3 and ts_debug are C trap handlers (emu/kpemu.h), called by
 * the engine's interrupt hook with the GIL held and ip and flags as trapped,
 * or directly from Python like any trap handler.  A user's handler may run
 * guest code (m.call) and so re-enter kprobes: what Python may change
 * meanwhile (the state above) is read back after the call, never kept in C
 * locals.  Each entry checks its precondition and raises KprobeBug
 * (kprobes.errors) when it does not hold.
 *
 * `fastpath = 0` sends every trap to the slow path (the tests run both ways).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>

#include "../../../emu/kpemu.h"

/* kprobe_status */
#define KPROBE_HIT_ACTIVE 0x1
#define KPROBE_HIT_SS 0x2
#define KPROBE_REENTER 0x4
#define KPROBE_HIT_SSDONE 0x8

/* What resume_execution() does after the step of an instruction (trap.Resume) */
enum {
	RESUME_RELOCATE = 0,	/* ip = probe address + (ip - slot) */
	RESUME_PUSHF = 1,	/* fix the pushed flags image, then relocate */
	RESUME_RET = 2,		/* ip is an absolute popped address: keep it */
	RESUME_CALL = 3,	/* fix the pushed return address, then relocate */
	RESUME_CALL_ABS = 4,	/* fix the pushed return address, keep ip */
	RESUME_JMP_ABS = 5,	/* keep ip */
};

typedef struct {
	PyObject_HEAD
	/* the per-CPU state of 2.6.13, shared with the Python trap path */
	char running;			/* kprobe_running() */
	int status;			/* kprobe_status */
	PyObject *current_kprobe;	/* None when not running */
	unsigned long long old_flags;	/* kprobe_old_rflags: TF|IF when trapped */
	unsigned long long saved_flags;	/* kprobe_saved_rflags */
	PyObject *prev;			/* save_previous_kprobe()'s area, or None */
	PyObject *resume_hit;		/* (probe address, sp) of a hit whose pre_handler
					 * raised and stopped m.run(), or None */
	/* counters */
	unsigned long long n_int3;	/* int3 traps taken for a probe */
	unsigned long long n_debug;	/* #DB traps after a single-step */
	unsigned long long fast_hits;	/* hits whose int3 this file handled */
	char fastpath;
	/* the hit the C int3 started, for the C #DB: what it needs of the probe */
	PyObject *hit_probe;		/* the probe (a strong reference), or NULL */
	unsigned long long hit_addr;	/* probe address */
	unsigned long long hit_slot;	/* its instruction slot */
	int hit_resume;			/* ainsn.resume */
	/* what it was made with */
	PyObject *table;		/* dict: probe address -> Kprobe */
	PyObject *observers;		/* the Machine's observers list */
	PyObject *regfile;		/* the engine's RegFile, for pt_regs views */
	PyObject *slow_int3;		/* the slow path (see the top of this file) */
	PyObject *slow_debug;
	PyObject *handler_raised;
	PyObject *counter_owner;	/* keeps the counter struct alive */
	struct kpemu_icount *counter;
} KprobeCtlblk;

static PyObject *s_disabled, *s_ainsn, *s_slot, *s_if_modifier, *s_resume, *s_pre_handler,
	*s_post_handler, *s_resume_in_post_handler, *zero;
static PyObject *KprobeBug;		/* kprobes.errors.KprobeBug */

static struct kpemu_api *api;		/* emu's pt_regs view, for C callers */

/* -- helpers -------------------------------------------------------------- */

/* A slow-path callable with the trap's (vector, ip, flags); its result as a
 * KPEMU_TRAP_* code, a tuple's ip and flags stored. */
static int to_python(PyObject *fn, unsigned int vector, uint64_t *ip, uint64_t *flags)
{
	/* argv[0] is scratch space the callee may use (PY_VECTORCALL_ARGUMENTS_OFFSET) */
	PyObject *argv[4] = {NULL, NULL, NULL, NULL}, *res = NULL;

	argv[1] = PyLong_FromUnsignedLong(vector);
	argv[2] = PyLong_FromUnsignedLongLong(*ip);
	argv[3] = PyLong_FromUnsignedLongLong(*flags);
	if (argv[1] != NULL && argv[2] != NULL && argv[3] != NULL)
		res = PyObject_Vectorcall(fn, argv + 1, 3 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
	Py_XDECREF(argv[1]);
	Py_XDECREF(argv[2]);
	Py_XDECREF(argv[3]);
	return api->trap_result(res, ip, flags);
}

/* handler_raised(which, p, regs, exc, ip, flags) with the exception now set. */
static int raised_to_python(KprobeCtlblk *s, PyObject *which, PyObject *p, PyObject *regs,
			    uint64_t *ip, uint64_t *flags)
{
	PyObject *type, *exc, *tb, *res = NULL, *ipo, *flo;

	PyErr_Fetch(&type, &exc, &tb);
	PyErr_NormalizeException(&type, &exc, &tb);
	if (exc != NULL && tb != NULL)
		PyException_SetTraceback(exc, tb);
	Py_XDECREF(type);
	Py_XDECREF(tb);
	ipo = PyLong_FromUnsignedLongLong(*ip);
	flo = PyLong_FromUnsignedLongLong(*flags);
	if (exc != NULL && ipo != NULL && flo != NULL)
		res = PyObject_CallFunctionObjArgs(s->handler_raised, which, p, regs, exc, ipo,
						   flo, NULL);
	Py_XDECREF(ipo);
	Py_XDECREF(flo);
	Py_XDECREF(exc);
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

static void unlock(KprobeCtlblk *s)
{
	s->running = 0;
	s->status = 0;
	Py_INCREF(Py_None);
	Py_SETREF(s->current_kprobe, Py_None);
	Py_CLEAR(s->hit_probe);
}

static int observed(KprobeCtlblk *s)
{
	return PyList_GET_SIZE(s->observers) > 0;
}

/* The precondition of every entry: the trap it is for, and a state in which
 * `running` and `current_kprobe` agree.  0, or -1 with KprobeBug raised. */
static int check_entry(KprobeCtlblk *s, const char *entry, unsigned int vector,
		       unsigned int want)
{
	if (s->table == NULL) {		/* cleared by the GC */
		PyErr_Format(KprobeBug, "kprobes: %s used after its subsystem", entry);
		return -1;
	}
	if (vector != want) {
		PyErr_Format(KprobeBug, "kprobes: %s called for vector %u, not %u", entry, vector,
			     want);
		return -1;
	}
	if (s->running != (s->current_kprobe != Py_None)) {
		PyErr_Format(KprobeBug, "kprobes: %s entered with running=%d but current_kprobe "
			     "%s", entry, s->running, s->current_kprobe == Py_None ? "None" : "set");
		return -1;
	}
	return 0;
}

/* -- int3 ------------------------------------------------------------------ */

/* Like kprobe_handler() in trap.py, for the plain hit. */
static int ts_int3(PyObject *owner, unsigned int vector, uint64_t *ip, uint64_t *flags)
{
	KprobeCtlblk *s = (KprobeCtlblk *)owner;
	uint64_t addr = *ip - 1, slot;
	PyObject *key, *p, *ainsn = NULL, *pre = NULL, *regs = NULL, *res = NULL;
	long resume = -1;
	int disabled, if_modifier, in_post, changed, code = -1;

	if (check_entry(s, "the int3 handler", vector, 3) < 0)
		return -1;
	if (!s->fastpath || s->running || observed(s) || s->resume_hit != Py_None)
		return to_python(s->slow_int3, vector, ip, flags);
	key = PyLong_FromUnsignedLongLong(addr);
	if (key == NULL)
		return -1;
	p = PyDict_GetItemWithError(s->table, key);
	Py_DECREF(key);
	if (p == NULL) {
		if (PyErr_Occurred())
			return -1;
		return to_python(s->slow_int3, vector, ip, flags);	/* not ours */
	}
	Py_INCREF(p);
	disabled = attr_true(p, s_disabled);
	if (disabled != 0) {
		Py_DECREF(p);
		return disabled < 0 ? -1 : to_python(s->slow_int3, vector, ip, flags);
	}
	ainsn = PyObject_GetAttr(p, s_ainsn);
	if (ainsn == NULL || attr_u64(ainsn, s_slot, &slot) < 0 ||
	    (if_modifier = attr_true(ainsn, s_if_modifier)) < 0 ||
	    (res = PyObject_GetAttr(ainsn, s_resume)) == NULL ||
	    ((resume = PyLong_AsLong(res)) == -1 && PyErr_Occurred()) ||
	    (in_post = attr_true(p, s_resume_in_post_handler)) < 0 ||
	    (pre = PyObject_GetAttr(p, s_pre_handler)) == NULL)
		goto out;
	Py_CLEAR(res);

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
	if (!in_post && (resume == RESUME_RELOCATE || resume == RESUME_RET ||
			 resume == RESUME_JMP_ABS)) {
		Py_INCREF(p);
		s->hit_probe = p;
		s->hit_addr = addr;
		s->hit_slot = slot;
		s->hit_resume = (int)resume;
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
			code = raised_to_python(s, s_pre_handler, p, regs, ip, flags);
			goto out;
		}
		changed = PyObject_IsTrue(res);
		if (changed < 0 || api->regs_trap_return(regs, ip, flags) < 0)
			goto out;
		if (changed) {
			/* The handler moved ip: no single-step. */
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
	Py_XDECREF(ainsn);
	Py_DECREF(p);
	return code;
}

/* -- #DB ------------------------------------------------------------------- */

/* Like post_kprobe_handler() in trap.py, for the plain step. */
static int ts_debug(PyObject *owner, unsigned int vector, uint64_t *ip, uint64_t *flags)
{
	KprobeCtlblk *s = (KprobeCtlblk *)owner;
	PyObject *p, *post = NULL, *regs = NULL, *res;
	int disabled, code = -1;

	if (check_entry(s, "the debug handler", vector, 1) < 0)
		return -1;
	/* Only the step of a hit the C int3 started, and still that hit: a handler
	 * may have re-entered kprobes (Python restores the outer state) or
	 * attached an observer. */
	if (!s->fastpath || !s->running || s->status != KPROBE_HIT_SS ||
	    s->hit_probe == NULL || s->hit_probe != s->current_kprobe ||
	    (s->saved_flags & X86_EFLAGS_TF) || observed(s))
		return to_python(s->slow_debug, vector, ip, flags);
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
			/* the slow path finishes this step */
			code = raised_to_python(s, s_post_handler, p, regs, ip, flags);
			goto out;
		}
		Py_DECREF(res);
		if (api->regs_trap_return(regs, ip, flags) < 0)
			goto out;
	}
	/* 2. resume_execution(), the fix-ups that touch only ip; TF cleared */
	*flags &= ~X86_EFLAGS_TF;
	if (s->hit_resume == RESUME_RELOCATE)
		*ip = s->hit_addr + (*ip - s->hit_slot);
	/* 3. the trapped context's TF and IF come back (TF never: a guest that
	 * single-steps itself went to the slow path above, and the post handler's
	 * own TF was cleared by the fix-up); 4. the state is released */
	*flags |= s->saved_flags;
	unlock(s);
	code = KPEMU_TRAP_RESUME;
out:
	Py_XDECREF(regs);
	Py_XDECREF(post);
	Py_DECREF(p);
	return code;
}

static struct kpemu_trap_handler int3_handler = {ts_int3};
static struct kpemu_trap_handler debug_handler = {ts_debug};

/* -- the type ----------------------------------------------------------------- */

static PyObject *kcb_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
	static char *kwlist[] = {"table", "observers", "regfile", "counter", "slow_int3",
				 "slow_debug", "handler_raised", NULL};
	PyObject *table, *observers, *regfile, *counter, *slow_int3, *slow_debug, *raised;
	KprobeCtlblk *s;
	Py_buffer view;

	if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!O!OOOOO", kwlist, &PyDict_Type, &table,
					 &PyList_Type, &observers, &regfile, &counter,
					 &slow_int3, &slow_debug, &raised))
		return NULL;
	if (!PyCallable_Check(slow_int3) || !PyCallable_Check(slow_debug) ||
	    !PyCallable_Check(raised)) {
		PyErr_SetString(PyExc_TypeError, "the slow path must be three callables");
		return NULL;
	}
	/* The clock's counter is a ctypes struct: its memory, through the buffer protocol. */
	if (PyObject_GetBuffer(counter, &view, PyBUF_SIMPLE) < 0)
		return NULL;
	if (view.len != (Py_ssize_t)sizeof(struct kpemu_icount)) {
		PyBuffer_Release(&view);
		PyErr_SetString(PyExc_TypeError, "counter must be the clock's kpemu_icount struct");
		return NULL;
	}
	s = (KprobeCtlblk *)type->tp_alloc(type, 0);
	if (s == NULL) {
		PyBuffer_Release(&view);
		return NULL;
	}
	s->counter = view.buf;	/* valid while counter_owner is held */
	PyBuffer_Release(&view);
	s->fastpath = 1;
	s->current_kprobe = Py_NewRef(Py_None);
	s->prev = Py_NewRef(Py_None);
	s->resume_hit = Py_NewRef(Py_None);
	s->table = Py_NewRef(table);
	s->observers = Py_NewRef(observers);
	s->regfile = Py_NewRef(regfile);
	s->slow_int3 = Py_NewRef(slow_int3);
	s->slow_debug = Py_NewRef(slow_debug);
	s->handler_raised = Py_NewRef(raised);
	s->counter_owner = Py_NewRef(counter);
	return (PyObject *)s;
}

static int kcb_traverse(KprobeCtlblk *s, visitproc visit, void *arg)
{
	Py_VISIT(s->current_kprobe);
	Py_VISIT(s->prev);
	Py_VISIT(s->resume_hit);
	Py_VISIT(s->hit_probe);
	Py_VISIT(s->table);
	Py_VISIT(s->observers);
	Py_VISIT(s->regfile);
	Py_VISIT(s->slow_int3);
	Py_VISIT(s->slow_debug);
	Py_VISIT(s->handler_raised);
	Py_VISIT(s->counter_owner);
	return 0;
}

static int kcb_clear(KprobeCtlblk *s)
{
	Py_CLEAR(s->current_kprobe);
	Py_CLEAR(s->prev);
	Py_CLEAR(s->resume_hit);
	Py_CLEAR(s->hit_probe);
	Py_CLEAR(s->table);
	Py_CLEAR(s->observers);
	Py_CLEAR(s->regfile);
	Py_CLEAR(s->slow_int3);
	Py_CLEAR(s->slow_debug);
	Py_CLEAR(s->handler_raised);
	/* counter_owner is kept: the counter must outlive any late trap */
	return 0;
}

static void kcb_dealloc(KprobeCtlblk *s)
{
	PyObject_GC_UnTrack(s);
	kcb_clear(s);
	Py_CLEAR(s->counter_owner);
	Py_TYPE(s)->tp_free((PyObject *)s);
}

static PyObject *kcb_unlock(KprobeCtlblk *s, PyObject *unused)
{
	unlock(s);
	Py_RETURN_NONE;
}

static PyMemberDef kcb_members[] = {
	{"running", T_BOOL, offsetof(KprobeCtlblk, running), 0, "kprobe_running()"},
	{"status", T_INT, offsetof(KprobeCtlblk, status), 0, "kprobe_status"},
	{"current_kprobe", T_OBJECT, offsetof(KprobeCtlblk, current_kprobe), 0,
	 "the probe being handled, or None"},
	{"old_flags", T_ULONGLONG, offsetof(KprobeCtlblk, old_flags), 0,
	 "kprobe_old_rflags: TF|IF of the trapped context"},
	{"saved_flags", T_ULONGLONG, offsetof(KprobeCtlblk, saved_flags), 0,
	 "kprobe_saved_rflags: the same, less IF for an IF modifier"},
	{"prev", T_OBJECT, offsetof(KprobeCtlblk, prev), 0,
	 "save_previous_kprobe()'s area: (current_kprobe, status, old_flags, saved_flags) or None"},
	{"resume_hit", T_OBJECT, offsetof(KprobeCtlblk, resume_hit), 0,
	 "(probe address, sp) of the hit a raising pre_handler stopped m.run() at, or None:\n"
	 "when the run goes on, that hit goes on without calling the pre_handler again"},
	{"n_int3", T_ULONGLONG, offsetof(KprobeCtlblk, n_int3), 0, "int3 traps taken for probes"},
	{"n_debug", T_ULONGLONG, offsetof(KprobeCtlblk, n_debug), 0,
	 "#DB traps taken after single-steps"},
	{"hit_probe", T_OBJECT, offsetof(KprobeCtlblk, hit_probe), READONLY,
	 "the probe whose hit the C int3 started (its #DB may stay in C), or None"},
	{"fast_hits", T_ULONGLONG, offsetof(KprobeCtlblk, fast_hits), READONLY,
	 "hits whose int3 the C path handled"},
	{"fastpath", T_BOOL, offsetof(KprobeCtlblk, fastpath), 0,
	 "False: every trap goes to the slow path"},
	{NULL},
};

static PyMethodDef kcb_methods[] = {
	{"unlock", (PyCFunction)kcb_unlock, METH_NOARGS,
	 "Release the state: not running, no current probe, no C hit in progress."},
	{NULL, NULL, 0, NULL},
};

static PyTypeObject KprobeCtlblkType = {
	PyVarObject_HEAD_INIT(NULL, 0)
	.tp_name = "kprobes.arch.x86_64._trap.KprobeCtlblk",
	.tp_doc = "KprobeCtlblk(table, observers, regfile, counter, slow_int3, slow_debug,\n"
		  "             handler_raised)\n"
		  "The per-CPU kprobes state (current_kprobe, kprobe_ctlblk) that both trap\n"
		  "paths share; INT3 and DEBUG, given this object, are the C trap handlers\n"
		  "(see kprobes/arch/x86_64/trap.c for the slow-path protocol).",
	.tp_basicsize = sizeof(KprobeCtlblk),
	.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
	.tp_new = kcb_new,
	.tp_traverse = (traverseproc)kcb_traverse,
	.tp_clear = (inquiry)kcb_clear,
	.tp_dealloc = (destructor)kcb_dealloc,
	.tp_members = kcb_members,
	.tp_methods = kcb_methods,
};

static struct PyModuleDef module = {
	PyModuleDef_HEAD_INIT, "_trap",
	"kprobes' per-CPU state and the trap path of the plain hit, in C (see trap.c).", -1,
	NULL,
};

static int intern(PyObject **slot, const char *text)
{
	*slot = PyUnicode_InternFromString(text);
	return *slot == NULL ? -1 : 0;
}

static int add_capsule(PyObject *m, const char *name, struct kpemu_trap_handler *handler)
{
	PyObject *capsule = PyCapsule_New(handler, KPEMU_TRAP_CAPSULE, NULL);

	if (capsule == NULL || PyModule_AddObject(m, name, capsule) < 0) {
		Py_XDECREF(capsule);
		return -1;
	}
	return 0;
}

PyMODINIT_FUNC PyInit__trap(void)
{
	PyObject *m, *errors;

	if (intern(&s_disabled, "disabled") || intern(&s_ainsn, "ainsn") ||
	    intern(&s_slot, "slot") || intern(&s_if_modifier, "if_modifier") ||
	    intern(&s_resume, "resume") || intern(&s_pre_handler, "pre_handler") ||
	    intern(&s_post_handler, "post_handler") ||
	    intern(&s_resume_in_post_handler, "resume_in_post_handler") ||
	    (zero = PyLong_FromLong(0)) == NULL)
		return NULL;
	api = PyCapsule_Import(KPEMU_API_CAPSULE, 0);
	if (api == NULL)
		return NULL;
	errors = PyImport_ImportModule("kprobes.errors");
	if (errors == NULL)
		return NULL;
	KprobeBug = PyObject_GetAttrString(errors, "KprobeBug");
	Py_DECREF(errors);
	if (KprobeBug == NULL || PyType_Ready(&KprobeCtlblkType) < 0)
		return NULL;
	m = PyModule_Create(&module);
	if (m == NULL)
		return NULL;
	/* The C trap handlers, for emu._fastpath.CTrapHandler(capsule, kcb). */
	if (add_capsule(m, "INT3", &int3_handler) < 0 ||
	    add_capsule(m, "DEBUG", &debug_handler) < 0 ||
	    PyModule_AddObjectRef(m, "KprobeCtlblk", (PyObject *)&KprobeCtlblkType) < 0 ||
	    PyModule_AddIntConstant(m, "KPROBE_HIT_ACTIVE", KPROBE_HIT_ACTIVE) < 0 ||
	    PyModule_AddIntConstant(m, "KPROBE_HIT_SS", KPROBE_HIT_SS) < 0 ||
	    PyModule_AddIntConstant(m, "KPROBE_REENTER", KPROBE_REENTER) < 0 ||
	    PyModule_AddIntConstant(m, "KPROBE_HIT_SSDONE", KPROBE_HIT_SSDONE) < 0 ||
	    PyModule_AddIntConstant(m, "RESUME_RELOCATE", RESUME_RELOCATE) < 0 ||
	    PyModule_AddIntConstant(m, "RESUME_PUSHF", RESUME_PUSHF) < 0 ||
	    PyModule_AddIntConstant(m, "RESUME_RET", RESUME_RET) < 0 ||
	    PyModule_AddIntConstant(m, "RESUME_CALL", RESUME_CALL) < 0 ||
	    PyModule_AddIntConstant(m, "RESUME_CALL_ABS", RESUME_CALL_ABS) < 0 ||
	    PyModule_AddIntConstant(m, "RESUME_JMP_ABS", RESUME_JMP_ABS) < 0)
		goto fail;
	return m;
fail:
	Py_DECREF(m);
	return NULL;
}
