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
 * Return probes (design "task", once the kretprobe manager called
 * set_kretprobes()): the same two traps carry the common cases of the
 * generic code of kprobes/kretprobe.py, which stays the reference --
 *
 *   the entry probe's int3 (a probe whose `kretprobe` is set, with no
 *       entry_handler and a free instance): pre_handler_kretprobe_c() takes
 *       the instance, records the task, the return slot and the address in it
 *       and writes the trampoline's there, as pre_handler_kretprobe() does;
 *   the trampoline's int3: trampoline_probe_handler_c() reports and recycles
 *       the current task's instances newest first up to the real return
 *       address and resumes there, as kretprobe_trampoline_handler() and the
 *       arch's trampoline_probe_handler() do;
 *
 * and hands anything else (an entry_handler, an empty pool, an orphan, no
 * instance for the task, memory it cannot read) to the Python handlers,
 * before it has changed anything.  Instances are KretprobeInstance objects
 * (below): their addresses are C integers, made Python ints only when Python
 * reads them, so the C path makes none per call, and one takes 104 bytes.
 *
 * Kprobe events (kprobes/events/trace_kprobe.py, the reference): a probe whose
 * pre_handler is an EventProbe (below) has its hit recorded by
 * event_record_c() -- the fetch arguments, comm, pid, the flags' inputs and the
 * clock read natively into a RawRecord in the ring buffer, nothing formatted --
 * and anything it does not do goes to the Python handler the EventProbe stands
 * for, before it has changed anything.
 *
 * `fastpath = 0` sends every trap to the slow path (the tests run both ways).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

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
	RESUME_REP = 6,		/* a rep string instruction: relocate, and the clock's
				 * charge for its last iteration (Python only) */
};

/* What a hit reads of a probe that does not change while it is registered: its
 * ainsn's slot, IF-modifier and resume action, resume_in_post_handler and the
 * kretprobe it belongs to -- kept per (probe, ainsn) so a hit does not look
 * them up by name again (a probe registered anew gets a new ainsn). */
#define SEEN_SIZE 16
struct seen_probe {
	PyObject *probe;		/* strong references, or NULL */
	PyObject *ainsn;
	PyObject *kretprobe;		/* None for a plain kprobe */
	uint64_t slot;
	long resume;
	int if_modifier;
	int in_post;
};

static void seen_clear(struct seen_probe *seen)
{
	Py_CLEAR(seen->probe);
	Py_CLEAR(seen->ainsn);
	Py_CLEAR(seen->kretprobe);
}

/* What every hit reads of a probe by name: Kprobe keeps these in slots
 * (kprobes/probe.py), and a hit reads a slot at its offset in the object --
 * live, nothing kept -- when the probe's type gives the attribute by that slot
 * (a subclass may give it otherwise: an aggregate's `disabled` is a property).
 * What a type gives is found once per type and version tag (a class changed
 * gets a new tag). */
enum { HS_PRE, HS_POST, HS_AINSN, HS_DISABLED, HS_GUEST_SHARED, HS_N };
static PyObject *hs_names[HS_N];

struct hit_layout {
	PyTypeObject *tp;		/* compared only, with its version tag */
	unsigned int version;
	Py_ssize_t off[HS_N];		/* the slot's offset, or -1: by name */
};
#define LAYOUTS 4

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
	/* return probes (set_kretprobes()); krp_table NULL until then */
	PyObject *krp_table;		/* kretprobe_inst_table: a list of 64 lists */
	PyObject *krp_tramp_probe;	/* the trampoline's kprobe */
	PyObject *krp_manager;		/* the KretprobeManager (its `handling`, no_instance()) */
	uint64_t krp_tramp;		/* the trampoline's address */
	uint64_t krp_current;		/* %gs offset of the per-CPU `current` */
	int krp_gs_id;			/* Unicorn ids of gs_base and rsp */
	int krp_sp_id;
	struct seen_probe seen[SEEN_SIZE];	/* by probe address */
	struct seen_address {		/* the table's answer for an address ... */
		uint64_t addr;
		PyObject *probe;	/* borrowed: the table holds it ... */
		uint64_t version;	/* ... while the table's version is this */
	} addrs[SEEN_SIZE];
	struct hit_layout layouts[LAYOUTS];	/* the probe types seen last */
	unsigned int next_layout;
	PyObject *spare_regs;		/* the last pt_regs view made, for the next trap */
} KprobeCtlblk;

static PyObject *s_disabled, *s_guest_shared, *s_ainsn, *s_slot, *s_if_modifier, *s_resume,
	*s_pre_handler, *s_post_handler, *s_resume_in_post_handler, *zero, *one;
static PyObject *s_kretprobe, *s_entry_handler, *s_free_instances, *s_used_instances,
	*s_entries, *s_returns, *s_handler, *s_handling, *s_data_size, *s_no_instance, *s_kp,
	*s_symbol_name, *s_orphans_returned, *s_misses, *s_orphaned;
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

/* The probe the table has at `addr` (borrowed), or NULL (an exception set, or
 * none).  The table's answer is kept while the dict is unchanged: CPython
 * versions every dict (PEP 509's ma_version_tag, for caches like this one;
 * deprecated from 3.12, where every hit asks the table). */
static PyObject *table_probe(KprobeCtlblk *s, uint64_t addr)
{
	struct seen_address *a = &s->addrs[addr % SEEN_SIZE];
	PyObject *key, *p;

#if PY_VERSION_HEX < 0x030C0000
	if (a->probe != NULL && a->addr == addr &&
	    a->version == ((PyDictObject *)s->table)->ma_version_tag)
		return a->probe;
#endif
	key = PyLong_FromUnsignedLongLong(addr);
	if (key == NULL)
		return NULL;
	p = PyDict_GetItemWithError(s->table, key);
	Py_DECREF(key);
	a->probe = NULL;
#if PY_VERSION_HEX < 0x030C0000
	if (p != NULL) {
		a->addr = addr;
		a->probe = p;
		a->version = ((PyDictObject *)s->table)->ma_version_tag;
	}
#endif
	return p;
}

/* How `p`'s type gives the hit-state attributes, copied into *out (the cache
 * entry may be reused while the caller runs Python: a handler or a property
 * re-entering the machine makes other probe types' hits), or NULL: by name
 * this time (a type without a valid version tag). */
static const struct hit_layout *hit_layout(KprobeCtlblk *s, PyObject *p,
					   struct hit_layout *out)
{
	PyTypeObject *tp = Py_TYPE(p);
	struct hit_layout *l;
	int i;

	for (i = 0; i < LAYOUTS; i++) {
		l = &s->layouts[i];
		if (l->tp == tp && PyType_HasFeature(tp, Py_TPFLAGS_VALID_VERSION_TAG) &&
		    tp->tp_version_tag == l->version) {
			*out = *l;
			return out;
		}
	}
	l = &s->layouts[s->next_layout++ % LAYOUTS];
	l->tp = NULL;
	for (i = 0; i < HS_N; i++) {
		/* what the instance's attribute lookup finds first: a data descriptor,
		 * one of a class the probe's type derives from (another class's slot
		 * put on it raises on access: by name, then) */
		PyObject *d = _PyType_Lookup(tp, hs_names[i]);

		l->off[i] = -1;
		if (tp->tp_getattro == PyObject_GenericGetAttr && d != NULL &&
		    Py_IS_TYPE(d, &PyMemberDescr_Type) &&
		    ((PyMemberDescrObject *)d)->d_member->type == T_OBJECT_EX &&
		    PyType_IsSubtype(tp, PyDescr_TYPE(d)))
			l->off[i] = ((PyMemberDescrObject *)d)->d_member->offset;
	}
	if (!PyType_HasFeature(tp, Py_TPFLAGS_VALID_VERSION_TAG))
		return NULL;
	l->tp = tp;
	l->version = tp->tp_version_tag;
	*out = *l;
	return out;
}

/* p's hit-state attribute `i`: a new reference, or NULL with an exception. */
static PyObject *hit_attr(PyObject *p, const struct hit_layout *l, int i)
{
	if (l != NULL && l->off[i] >= 0) {
		PyObject *v = *(PyObject **)((char *)p + l->off[i]);

		if (v != NULL)
			return Py_NewRef(v);
	}
	return PyObject_GetAttr(p, hs_names[i]);	/* (an empty slot: its AttributeError) */
}

static int hit_true(PyObject *p, const struct hit_layout *l, int i)
{
	PyObject *v = hit_attr(p, l, i);
	int truth;

	if (v == NULL)
		return -1;
	truth = v == Py_False ? 0 : v == Py_True ? 1 : PyObject_IsTrue(v);
	Py_DECREF(v);
	return truth;
}

/* A pt_regs view for a trap: the last one made again when nobody kept it. */
static PyObject *trap_regs(KprobeCtlblk *s, uint64_t ip, uint64_t flags)
{
	PyObject *regs;

	if (s->spare_regs != NULL &&
	    (regs = api->regs_again(s->regfile, s->spare_regs, ip, flags)) != NULL)
		return regs;
	regs = api->regs_at_trap(s->regfile, ip, flags);
	if (regs != NULL)
		Py_XSETREF(s->spare_regs, Py_NewRef(regs));
	return regs;
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

/* -- kretprobe instances ------------------------------------------------------ */

/* struct kretprobe_instance (kprobes/kretprobe.py says what each field means). */
enum { RI_RET_ADDR, RI_TASK, RI_STACK_ADDR, RI_NADDRS };

typedef struct {
	PyObject_HEAD
	PyObject *rp;			/* the Kretprobe, None once orphaned */
	PyObject *orphan_of;		/* the Kretprobe an orphan was taken for, or None */
	PyObject *data;			/* bytearray(data_size), made at first use when 0 */
	unsigned long long addr[RI_NADDRS];	/* ret_addr, task, stack_addr */
	/* Each address as a Python int, made when Python first reads it and kept
	 * until it changes (the Python path reads them again and again; the C
	 * path never makes one), or NULL. */
	PyObject *addr_obj[RI_NADDRS];
} KretprobeInstance;

static void ri_set(KretprobeInstance *ri, int which, unsigned long long value)
{
	ri->addr[which] = value;
	Py_CLEAR(ri->addr_obj[which]);
}

static PyTypeObject KretprobeInstanceType;

static PyObject *ri_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
	static char *kwlist[] = {"rp", NULL};
	PyObject *rp, *size;
	KretprobeInstance *ri;
	Py_ssize_t n;

	if (!PyArg_ParseTupleAndKeywords(args, kwds, "O:KretprobeInstance", kwlist, &rp))
		return NULL;
	size = PyObject_GetAttr(rp, s_data_size);
	if (size == NULL)
		return NULL;
	n = PyLong_AsSsize_t(size);
	Py_DECREF(size);
	if (n == -1 && PyErr_Occurred())
		return NULL;
	ri = (KretprobeInstance *)type->tp_alloc(type, 0);
	if (ri == NULL)
		return NULL;
	ri->rp = Py_NewRef(rp);
	ri->orphan_of = Py_NewRef(Py_None);
	if (n > 0) {
		ri->data = PyByteArray_FromStringAndSize(NULL, n);
		if (ri->data == NULL) {
			Py_DECREF(ri);
			return NULL;
		}
		memset(PyByteArray_AS_STRING(ri->data), 0, n);
	}
	return (PyObject *)ri;
}

static PyObject *ri_get_data(KretprobeInstance *ri, void *closure)
{
	if (ri->data == NULL && (ri->data = PyByteArray_FromStringAndSize(NULL, 0)) == NULL)
		return NULL;
	return Py_NewRef(ri->data);
}

static int ri_set_data(KretprobeInstance *ri, PyObject *value, void *closure)
{
	if (value == NULL) {
		PyErr_SetString(PyExc_TypeError, "a kretprobe instance's data cannot be deleted");
		return -1;
	}
	Py_XSETREF(ri->data, Py_NewRef(value));
	return 0;
}

static PyObject *ri_get_addr(KretprobeInstance *ri, void *closure)
{
	int which = (int)(intptr_t)closure;

	if (ri->addr_obj[which] == NULL &&
	    (ri->addr_obj[which] = PyLong_FromUnsignedLongLong(ri->addr[which])) == NULL)
		return NULL;
	return Py_NewRef(ri->addr_obj[which]);
}

static int ri_set_addr(KretprobeInstance *ri, PyObject *value, void *closure)
{
	unsigned long long v;

	if (value == NULL) {
		PyErr_SetString(PyExc_TypeError, "a kretprobe instance's address cannot be deleted");
		return -1;
	}
	v = PyLong_AsUnsignedLongLong(value);	/* OverflowError below 0 or above 2**64 */
	if (v == (unsigned long long)-1 && PyErr_Occurred())
		return -1;
	ri_set(ri, (int)(intptr_t)closure, v);
	return 0;
}

static int ri_traverse(KretprobeInstance *ri, visitproc visit, void *arg)
{
	Py_VISIT(ri->rp);
	Py_VISIT(ri->orphan_of);
	Py_VISIT(ri->data);
	return 0;
}

static int ri_clear(KretprobeInstance *ri)
{
	Py_CLEAR(ri->rp);
	Py_CLEAR(ri->orphan_of);
	Py_CLEAR(ri->data);
	for (int i = 0; i < RI_NADDRS; i++)
		Py_CLEAR(ri->addr_obj[i]);
	return 0;
}

static void ri_dealloc(KretprobeInstance *ri)
{
	PyObject_GC_UnTrack(ri);
	ri_clear(ri);
	Py_TYPE(ri)->tp_free((PyObject *)ri);
}

static PyObject *ri_repr(KretprobeInstance *ri)
{
	PyObject *owner, *kp, *r;
	char addrs[64];

	if (ri->rp == NULL || ri->rp == Py_None) {
		owner = PyUnicode_FromString("orphan");
	} else if ((kp = PyObject_GetAttr(ri->rp, s_kp)) != NULL) {
		owner = PyObject_GetAttr(kp, s_symbol_name);
		Py_DECREF(kp);
	} else {
		owner = NULL;
	}
	if (owner == NULL)
		return NULL;
	snprintf(addrs, sizeof(addrs), "task=0x%llx ret_addr=0x%llx", ri->addr[RI_TASK],
		 ri->addr[RI_RET_ADDR]);
	r = PyUnicode_FromFormat("<kretprobe_instance %S %s>", owner, addrs);
	Py_DECREF(owner);
	return r;
}

static PyMemberDef ri_members[] = {
	{"rp", T_OBJECT, offsetof(KretprobeInstance, rp), 0, "the Kretprobe, None once orphaned"},
	{"orphan_of", T_OBJECT, offsetof(KretprobeInstance, orphan_of), 0,
	 "the Kretprobe an orphan was taken for"},
	{NULL},
};

static PyGetSetDef ri_getset[] = {
	{"data", (getter)ri_get_data, (setter)ri_set_data,
	 "per-instance data shared by entry_handler and handler (data_size bytes)"},
	{"ret_addr", (getter)ri_get_addr, (setter)ri_set_addr, "the real return address",
	 (void *)RI_RET_ADDR},
	{"task", (getter)ri_get_addr, (setter)ri_set_addr, "the task_struct", (void *)RI_TASK},
	{"stack_addr", (getter)ri_get_addr, (setter)ri_set_addr, "the return slot's address",
	 (void *)RI_STACK_ADDR},
	{NULL},
};

static PyTypeObject KretprobeInstanceType = {
	PyVarObject_HEAD_INIT(NULL, 0)
	.tp_name = "kprobes.arch.x86_64._trap.KretprobeInstance",
	.tp_doc = "KretprobeInstance(rp): struct kretprobe_instance (see kprobes/kretprobe.py).",
	.tp_basicsize = sizeof(KretprobeInstance),
	.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
	.tp_new = ri_new,
	.tp_traverse = (traverseproc)ri_traverse,
	.tp_clear = (inquiry)ri_clear,
	.tp_dealloc = (destructor)ri_dealloc,
	.tp_repr = (reprfunc)ri_repr,
	.tp_members = ri_members,
	.tp_getset = ri_getset,
};

/* -- return probes --------------------------------------------------------------- */

/* hash_ptr() on 64-bit, KPROBE_HASH_BITS = 6 (kprobes/kretprobe.py) */
static Py_ssize_t krp_hash(uint64_t task)
{
	return (Py_ssize_t)((task * 0x9E37FFFFFFFC0001ULL) >> 58);
}

/* The guest's `current` (Machine.current_addr): 0 before the per-CPU area is
 * set up; -1 (no exception) when it cannot be read.  krp_gs_id < 0: no segment
 * (a UP Linux), krp_current is the variable's own address. */
static int krp_current(KprobeCtlblk *s, uint64_t *task)
{
	uint64_t gs;

	*task = 0;
	if (s->krp_gs_id < 0)
		return api->vmem_read_u64(s->regfile, s->krp_current, task);
	if (api->reg_read(s->regfile, s->krp_gs_id, &gs) < 0)
		return -1;
	return gs ? api->vmem_read_u64(s->regfile, gs + s->krp_current, task) : 0;
}

/* table[hash(task)] (borrowed), or NULL with an exception set. */
static PyObject *krp_bucket(KprobeCtlblk *s, uint64_t task)
{
	PyObject *bucket = PyList_GetItem(s->krp_table, krp_hash(task));

	if (bucket != NULL && !PyList_Check(bucket)) {
		PyErr_SetString(KprobeBug, "kprobes: a kretprobe table bucket is not a list");
		return NULL;
	}
	return bucket;
}

/* obj.name += 1 */
static int attr_inc(PyObject *obj, PyObject *name)
{
	PyObject *v = PyObject_GetAttr(obj, name), *n;
	int r;

	if (v == NULL)
		return -1;
	n = PyNumber_Add(v, one);
	Py_DECREF(v);
	if (n == NULL)
		return -1;
	r = PyObject_SetAttr(obj, name, n);
	Py_DECREF(n);
	return r;
}

/* A list attribute of obj (a new reference), or NULL (an exception set when
 * the attribute is missing; none when it is not a list). */
static PyObject *attr_list(PyObject *obj, PyObject *name)
{
	PyObject *v = PyObject_GetAttr(obj, name);

	if (v != NULL && !PyList_Check(v))
		Py_CLEAR(v);
	return v;
}

/* _remove_near_head(): remove `item` from `list`, searching from its end. */
static int remove_near_head(PyObject *list, PyObject *item)
{
	Py_ssize_t i;

	for (i = PyList_GET_SIZE(list) - 1; i >= 0; i--)
		if (PyList_GET_ITEM(list, i) == item)
			return PyList_SetSlice(list, i, i + 1, NULL);
	PyErr_SetString(KprobeBug, "kprobes: a kretprobe instance is missing from its list");
	return -1;
}

/*
 * Like pre_handler_kretprobe() in kprobes/kretprobe.py (design "task"), at the
 * entry probe's int3 of `rp`.  1: done (the instance is in flight, the hit goes
 * on to its single-step); 0: the Python pre_handler is to run instead (nothing
 * has changed); -1 with an exception set.
 */
static int pre_handler_kretprobe_c(KprobeCtlblk *s, PyObject *rp)
{
	PyObject *entry = NULL, *free_list = NULL, *used = NULL, *bucket, *tmp;
	KretprobeInstance *ri = NULL;
	uint64_t sp, task, ret_addr;
	int code = 0;

	if ((entry = PyObject_GetAttr(rp, s_entry_handler)) == NULL)
		return -1;
	if (entry != Py_None)
		goto out;		/* the entry handler runs in Python */
	free_list = attr_list(rp, s_free_instances);
	used = attr_list(rp, s_used_instances);
	if (free_list == NULL || used == NULL) {
		code = PyErr_Occurred() ? -1 : 0;
		goto out;
	}
	if (PyList_GET_SIZE(free_list) == 0 ||
	    !Py_IS_TYPE(PyList_GET_ITEM(free_list, PyList_GET_SIZE(free_list) - 1),
			&KretprobeInstanceType))
		goto out;		/* a miss: Python counts it */
	/* Everything that can fail to read, before anything is changed. */
	if (api->reg_read(s->regfile, s->krp_sp_id, &sp) < 0 || krp_current(s, &task) < 0 ||
	    api->vmem_read_u64(s->regfile, sp, &ret_addr) < 0)
		goto out;
	if ((bucket = krp_bucket(s, task)) == NULL) {
		code = -1;
		goto out;
	}
	/* arch_prepare_kretprobe(): the trampoline in the return slot */
	if (api->vmem_write_u64(s->regfile, sp, s->krp_tramp) < 0)
		goto out;
	code = -1;
	if (attr_inc(rp, s_entries) < 0)
		goto out;
	ri = (KretprobeInstance *)Py_NewRef(PyList_GET_ITEM(free_list,
							     PyList_GET_SIZE(free_list) - 1));
	if (PyList_SetSlice(free_list, PyList_GET_SIZE(free_list) - 1,
			    PyList_GET_SIZE(free_list), NULL) < 0)
		goto out;
	tmp = ri->rp;
	ri->rp = Py_NewRef(rp);
	Py_XDECREF(tmp);
	ri_set(ri, RI_STACK_ADDR, sp);
	ri_set(ri, RI_TASK, task);
	ri_set(ri, RI_RET_ADDR, ret_addr);
	if (PyList_Append(bucket, (PyObject *)ri) < 0 || PyList_Append(used, (PyObject *)ri) < 0)
		goto out;
	code = 1;
out:
	Py_XDECREF(ri);
	Py_XDECREF(entry);
	Py_XDECREF(free_list);
	Py_XDECREF(used);
	return code;
}

/* recycle_rp_inst() for an instance of `bucket`: out of it, and back to its
 * rp's free list (dropped when the rp has gone meanwhile). */
static int recycle_c(PyObject *bucket, KretprobeInstance *ri)
{
	PyObject *rp = ri->rp, *free_list, *used;
	int r = -1;

	if (remove_near_head(bucket, (PyObject *)ri) < 0)
		return -1;
	if (rp == NULL || rp == Py_None)
		return 0;
	Py_INCREF(rp);
	free_list = attr_list(rp, s_free_instances);
	used = attr_list(rp, s_used_instances);
	if (free_list != NULL && used != NULL && remove_near_head(used, (PyObject *)ri) == 0)
		r = PyList_Append(free_list, (PyObject *)ri);
	else if (!PyErr_Occurred())
		PyErr_SetString(KprobeBug, "kprobes: a kretprobe's instance lists are not lists");
	Py_XDECREF(free_list);
	Py_XDECREF(used);
	Py_DECREF(rp);
	return r;
}

/* _orphan_returned(): an orphan came back -- counted as an 'orphaned' miss of
 * the kretprobe it was taken for. */
static int orphan_returned_c(KprobeCtlblk *s, KretprobeInstance *ri)
{
	PyObject *misses, *n, *m;
	int r;

	if (attr_inc(s->krp_manager, s_orphans_returned) < 0 ||
	    (misses = PyObject_GetAttr(ri->orphan_of, s_misses)) == NULL)
		return -1;
	n = PyObject_GetItem(misses, s_orphaned);	/* a Counter: 0 when absent */
	m = n == NULL ? NULL : PyNumber_Add(n, one);
	r = m == NULL ? -1 : PyObject_SetItem(misses, s_orphaned, m);
	Py_XDECREF(n);
	Py_XDECREF(m);
	Py_DECREF(misses);
	return r;
}

/*
 * Like the arch's trampoline_probe_handler() around the generic
 * kretprobe_trampoline_handler() (design "task"), at the trampoline's int3 with
 * the state set up as for any hit: every instance of the current task, newest
 * first, reported and recycled until the one whose ret_addr is not the
 * trampoline, whose ret_addr is where the CPU resumes (no single-step).
 * KPEMU_TRAP_RESUME with *ip and *flags set and the state released; DECLINE:
 * the Python pre_handler is to run instead (nothing changed); -1 with an
 * exception set.
 */
static int trampoline_probe_handler_c(KprobeCtlblk *s, PyObject *p, uint64_t *ip,
				      uint64_t *flags)
{
	PyObject *bucket, *regs = NULL;
	uint64_t task, orig = 0;
	Py_ssize_t i;
	int found = 0, code = -1;

	if (krp_current(s, &task) < 0)
		return KPEMU_TRAP_DECLINE;
	if ((bucket = krp_bucket(s, task)) == NULL)
		return -1;
	Py_INCREF(bucket);
	/* Only the case with nothing for Python to do: no orphan on the way, and an
	 * instance with the real return address at its end. */
	for (i = PyList_GET_SIZE(bucket) - 1; i >= 0 && !found; i--) {
		KretprobeInstance *ri = (KretprobeInstance *)PyList_GET_ITEM(bucket, i);

		if (!Py_IS_TYPE(ri, &KretprobeInstanceType))
			goto decline;
		if (ri->addr[RI_TASK] != task)
			continue;
		if (ri->rp == NULL || ri->rp == Py_None)
			goto decline;
		found = ri->addr[RI_RET_ADDR] != s->krp_tramp;
	}
	if (!found)
		goto decline;
	regs = api->regs_at_trap(s->regfile, *ip, *flags);
	if (regs == NULL)
		goto out;
	/* Like the generic loop: from the head, by index (a recycled instance is
	 * removed; the older ones keep theirs). */
	i = PyList_GET_SIZE(bucket) - 1;
	while (i >= 0) {
		KretprobeInstance *ri;
		PyObject *rp, *handler;

		if (i >= PyList_GET_SIZE(bucket)) {	/* a handler shrank the bucket */
			i = PyList_GET_SIZE(bucket) - 1;
			continue;
		}
		ri = (KretprobeInstance *)Py_NewRef(PyList_GET_ITEM(bucket, i));
		i--;
		if (!Py_IS_TYPE(ri, &KretprobeInstanceType) || ri->addr[RI_TASK] != task) {
			Py_DECREF(ri);
			continue;
		}
		rp = ri->rp;
		if (rp == NULL || rp == Py_None) {
			/* orphaned by a handler of this very return (its kretprobe
			 * unregistered): _orphan_returned(), then it is dropped */
			orig = ri->addr[RI_RET_ADDR];
			if (orphan_returned_c(s, ri) < 0 || recycle_c(bucket, ri) < 0) {
				Py_DECREF(ri);
				goto out;
			}
			Py_DECREF(ri);
			if (orig != s->krp_tramp)
				break;
			continue;
		}
		Py_INCREF(rp);
		/* _report_return(): the handler, with `handling` set for the unwinder */
		handler = PyObject_GetAttr(rp, s_handler);
		if (handler != NULL && handler != Py_None) {
			PyObject *argv[2] = {(PyObject *)ri, regs}, *res;

			if (PyObject_SetAttr(s->krp_manager, s_handling, (PyObject *)ri) < 0) {
				Py_DECREF(handler);
				handler = NULL;
			} else {
				res = PyObject_Vectorcall(handler, argv, 2, NULL);
				if (res == NULL) {
					PyObject *t, *v, *tb;

					PyErr_Fetch(&t, &v, &tb);
					PyObject_SetAttr(s->krp_manager, s_handling, Py_None);
					PyErr_Restore(t, v, tb);
					Py_DECREF(handler);
					Py_DECREF(rp);
					Py_DECREF(ri);
					code = raised_to_python(s, s_pre_handler, p, regs, ip, flags);
					goto out;
				}
				Py_DECREF(res);
				if (PyObject_SetAttr(s->krp_manager, s_handling, Py_None) < 0) {
					Py_DECREF(handler);
					handler = NULL;
				}
			}
		}
		if (handler == NULL || attr_inc(rp, s_returns) < 0) {
			Py_XDECREF(handler);
			Py_DECREF(rp);
			Py_DECREF(ri);
			goto out;
		}
		Py_DECREF(handler);
		Py_DECREF(rp);
		orig = ri->addr[RI_RET_ADDR];
		if (recycle_c(bucket, ri) < 0) {
			Py_DECREF(ri);
			goto out;
		}
		Py_DECREF(ri);
		if (orig != s->krp_tramp)
			break;
	}
	if (orig == 0 || orig == s->krp_tramp) {
		/* a handler took the rest away: the generic BUG report */
		PyObject *t = PyLong_FromUnsignedLongLong(task), *res = NULL;

		if (t != NULL)
			res = PyObject_CallMethodOneArg(s->krp_manager, s_no_instance, t);
		Py_XDECREF(t);
		if (res == NULL)
			goto out;
		Py_DECREF(res);
		if (api->regs_trap_return(regs, ip, flags) < 0)
			goto out;
	} else {
		if (api->regs_trap_return(regs, ip, flags) < 0)
			goto out;
		*ip = orig;
	}
	unlock(s);
	code = KPEMU_TRAP_RESUME;
	goto out;
decline:
	code = KPEMU_TRAP_DECLINE;
out:
	Py_XDECREF(regs);
	Py_DECREF(bucket);
	return code;
}

/* -- kprobe events ------------------------------------------------------------ */

/*
 * A kprobe_events probe (kprobes/events/trace_kprobe.py, TraceKprobe), whose
 * kprobe's pre_handler is an EventProbe: called from Python it is the Python
 * handler it was made with (TraceKprobe._hit, the reference); at a hit the C
 * int3 takes, event_record_c() does what that handler does without a Python
 * call -- the fetch arguments read natively, comm, pid, the flags' inputs and
 * the clock taken, a fixed-size RawRecord written into the ring buffer as
 * RingBuffer.write() writes one (ring_buffer.py), nhit counted -- and nothing
 * formatted: a RawRecord becomes a TraceRecord only when the buffer is read.
 *
 * What it does not do it hands to the Python handler before it has changed
 * anything: a listener attached (trace_pipe takes TraceRecords as they come),
 * no `current` read set up (set_kretprobes()), any memory read that fails (the
 * Python path is the one that says what is a fault), a read that could reach a
 * page its value does not touch.  Arguments the C program cannot express
 * (strings, arrays, $comm, return values ...) make no EventProbe at all: the
 * events layer keeps the plain Python handler for that probe.
 *
 * The program, one tuple per argument (made by the arch's native_event()):
 *   (src, value, derefs, store, store_off, size, lshift, rshift, bits)
 *   src     EV_SRC_*: a register by Unicorn id, the trapped ip or flags, an
 *           immediate, the Nth word of the current stack (0 outside it);
 *   derefs  ((user, offset), ...): val = *(u64 *)(val + offset), a user one
 *           refused (to Python) at or above TASK_SIZE_MAX;
 *   store   EV_ST_*: the value itself, or `size` bytes at val + store_off;
 *   bits    non-zero for a bitfield: ((v << lshift) & mask(bits)) >> rshift.
 */
enum { EV_SRC_REG, EV_SRC_IP, EV_SRC_FLAGS, EV_SRC_IMM, EV_SRC_STACK };
enum { EV_ST_RAW, EV_ST_MEM, EV_ST_UMEM };
#define EV_MAX_DEREFS 16
#define EV_MAX_ARGS 32
#define EV_COMM_MAX 32
#define EV_TASK_SIZE_MAX ((1ULL << 47) - 4096)	/* trace_probe.TASK_SIZE_MAX */
#define EV_PAGE_SIZE 4096ULL

struct ev_arg {
	int src, store, size, nderefs;
	uint64_t value, store_off;
	int lshift, rshift, bits;
	struct { int user; uint64_t offset; } deref[EV_MAX_DEREFS];
};

typedef struct {
	PyObject_HEAD
	PyObject *handler;		/* the Python pre_handler (the reference) */
	PyObject *event;		/* the TraceEvent: its `enabled` */
	PyObject *buffer;		/* the RingBuffer */
	PyObject *listeners;		/* KprobeEvents.listeners (a list) */
	PyObject *owner;		/* the TraceKprobe, for the reader of a RawRecord */
	PyObject *place;		/* (probe address, its text in a trace line), set
					 * by Python at registration, or None */
	unsigned long long nhit;	/* TraceKprobe.nhit */
	long record_size;		/* event_size(payload) of every record */
	long page_size;			/* BUF_PAGE_SIZE */
	/* the task layout (emu.tasks.Layout) and the thread_info flags' inputs */
	uint64_t comm_off, pid_off, thread_size;
	int comm_len;
	long long ti_flags, ti_preempt;	/* -1: not exported */
	int need_resched_bit;
	/* guest memory as emu.memory.Memory reads it: through the kernel mapping
	 * straight from RAM once `mem.kernel_map_checked`, else page by page */
	PyObject *mem;
	const unsigned char *ram;	/* the host address of guest RAM */
	uint64_t ram_size, kernel_map;
	int direct;			/* mem.kernel_map_checked, read at each hit */
	int nargs;
	struct ev_arg args[EV_MAX_ARGS];
} EventProbe;

/* One hit as the C path records it (a RawRecord; trace_kprobe.py reads it). */
typedef struct {
	PyObject_VAR_HEAD		/* ob_size: the number of values */
	PyObject *probe;		/* the EventProbe */
	PyObject *ip_text;		/* the probe's place, as its `place` said */
	uint64_t probe_addr, clock;
	int32_t pid;
	uint32_t preempt_count;
	char need_resched;
	char comm[EV_COMM_MAX];
	int comm_len;
	uint64_t values[1];
} RawRecord;

static PyTypeObject EventProbeType, RawRecordType;
static PyObject *s_enabled, *s_kernel_map_checked, *s_written, *s_overrun, *s_used, *s_pages, *s_nr_pages,
	*s_popleft, *s_append;

/* size (1, 2, 4, 8) bytes at va, like Memory.read(): inside the kernel
 * mapping from RAM itself, elsewhere through the page tables; -1 when that
 * read fails or an 8-byte one could touch the next page where the value does
 * not. */
static int ev_read(KprobeCtlblk *s, EventProbe *ep, uint64_t va, int size, uint64_t *out)
{
	uint64_t v = 0, off = va - ep->kernel_map;

	if (ep->direct && off < ep->ram_size && off + size <= ep->ram_size) {
		memcpy(&v, ep->ram + off, size);	/* little-endian, like the guest */
		*out = v;
		return 0;
	}
	if (size < 8 && (va & (EV_PAGE_SIZE - 1)) > EV_PAGE_SIZE - 8)
		return -1;
	if (api->vmem_read_u64(s->regfile, va, &v) < 0)
		return -1;
	*out = size < 8 ? v & ((1ULL << (8 * size)) - 1) : v;
	return 0;
}

/* One argument's value, like FetchArg.fetch(); -1: the Python path decides. */
static int ev_fetch(KprobeCtlblk *s, EventProbe *ep, const struct ev_arg *a, uint64_t ip,
		    uint64_t flags, uint64_t sp, uint64_t *out)
{
	uint64_t val = 0, addr;
	int i;

	switch (a->src) {
	case EV_SRC_REG:
		if (api->reg_read(s->regfile, (int)a->value, &val) < 0)
			return -1;
		break;
	case EV_SRC_IP:
		val = ip;
		break;
	case EV_SRC_FLAGS:
		val = flags;
		break;
	case EV_SRC_IMM:
		val = a->value;
		break;
	case EV_SRC_STACK:	/* regs_get_kernel_stack_nth() */
		addr = sp + 8 * a->value;
		if ((addr & ~(ep->thread_size - 1)) != (sp & ~(ep->thread_size - 1)))
			val = 0;
		else if (ev_read(s, ep, addr, 8, &val) < 0)
			return -1;
		break;
	default:
		return -1;
	}
	for (i = 0; i < a->nderefs; i++) {
		addr = val + a->deref[i].offset;
		if (a->deref[i].user && addr + 8 > EV_TASK_SIZE_MAX)
			return -1;
		if (ev_read(s, ep, addr, 8, &val) < 0)
			return -1;
	}
	if (a->store == EV_ST_RAW) {
		if (a->size < 8)
			val &= (1ULL << (8 * a->size)) - 1;
	} else {
		addr = val + a->store_off;
		if (a->store == EV_ST_UMEM && addr + a->size > EV_TASK_SIZE_MAX)
			return -1;
		if (ev_read(s, ep, addr, a->size, &val) < 0)
			return -1;
	}
	if (a->bits) {
		uint64_t mask = a->bits == 64 ? ~0ULL : (1ULL << a->bits) - 1;

		val = (a->lshift >= 64 ? 0 : (val << a->lshift) & mask);
		val = a->rshift >= 64 ? 0 : val >> a->rshift;
	}
	*out = val;
	return 0;
}

/* obj.name as a C long long (-1 and an exception on failure). */
static int attr_ll(PyObject *obj, PyObject *name, long long *out)
{
	PyObject *v = PyObject_GetAttr(obj, name);

	if (v == NULL)
		return -1;
	*out = PyLong_AsLongLong(v);
	Py_DECREF(v);
	return PyErr_Occurred() ? -1 : 0;
}

static int set_ll(PyObject *obj, PyObject *name, long long value)
{
	PyObject *v = PyLong_FromLongLong(value);
	int r = v == NULL ? -1 : PyObject_SetAttr(obj, name, v);

	Py_XDECREF(v);
	return r;
}

/* Like RingBuffer.write() (kprobes/events/ring_buffer.py) for a record of
 * ep->record_size bytes, which fits a page (native_event() made sure): into the
 * newest page, the oldest page dropped whole when a new one is needed and the
 * buffer has all its pages.  0, or -1 with an exception set. */
static int ev_ring_write(EventProbe *ep, PyObject *rec)
{
	PyObject *buf = ep->buffer, *pages, *page, *old, *res;
	long long written, used, nr_pages, overrun;
	Py_ssize_t n;
	int r = -1;

	if (attr_ll(buf, s_written, &written) < 0 || set_ll(buf, s_written, written + 1) < 0 ||
	    attr_ll(buf, s_used, &used) < 0 || (pages = PyObject_GetAttr(buf, s_pages)) == NULL)
		return -1;
	if (used + ep->record_size > ep->page_size) {
		if ((n = PyObject_Size(pages)) < 0 || attr_ll(buf, s_nr_pages, &nr_pages) < 0)
			goto out;
		if (n == nr_pages) {
			if ((old = PyObject_CallMethodNoArgs(pages, s_popleft)) == NULL)
				goto out;
			n = PyObject_Size(old);
			Py_DECREF(old);
			if (n < 0 || attr_ll(buf, s_overrun, &overrun) < 0 ||
			    set_ll(buf, s_overrun, overrun + n) < 0)
				goto out;
		}
		if ((page = PyList_New(0)) == NULL)
			goto out;
		res = PyObject_CallMethodOneArg(pages, s_append, page);
		Py_DECREF(page);
		if (res == NULL)
			goto out;
		Py_DECREF(res);
		used = 0;
	}
	if ((page = PySequence_GetItem(pages, -1)) == NULL)
		goto out;
	r = PyList_Check(page) ? PyList_Append(page, rec) : -1;
	if (r < 0 && !PyErr_Occurred())
		PyErr_SetString(KprobeBug, "kprobes: a ring-buffer page is not a list");
	Py_DECREF(page);
	if (r == 0)
		r = set_ll(buf, s_used, used + ep->record_size);
out:
	Py_DECREF(pages);
	return r;
}

/*
 * Like TraceKprobe._hit() and _record() (trace_kprobe.py) for the hit at
 * probe_addr, ip and flags as trapped.  1: done (as if the handler returned
 * 0); 0: the Python handler is to run instead (nothing has changed); -1 with
 * an exception set.
 */
static int event_record_c(KprobeCtlblk *s, EventProbe *ep, uint64_t probe_addr, uint64_t ip,
			  uint64_t flags)
{
	uint64_t sp, task, v, vals[EV_MAX_ARGS], comm[EV_COMM_MAX / 8] = {0}, ti;
	uint64_t pid = 0, preempt = 0;
	int enabled, need = 0, i, comm_len = 0;
	PyObject *ip_text;
	RawRecord *rec;

	if (PyList_GET_SIZE(ep->listeners) > 0 || s->krp_table == NULL)
		return 0;
	/* the place a trace line prints, made in Python for this address */
	if (ep->place == NULL || !PyTuple_Check(ep->place) || PyTuple_GET_SIZE(ep->place) != 2 ||
	    PyLong_AsUnsignedLongLongMask(PyTuple_GET_ITEM(ep->place, 0)) != probe_addr) {
		if (PyErr_Occurred())
			PyErr_Clear();
		return 0;
	}
	ip_text = PyTuple_GET_ITEM(ep->place, 1);
	if ((enabled = attr_true(ep->event, s_enabled)) < 0)
		return -1;
	if (!enabled) {
		ep->nhit++;
		return 1;
	}
	if ((ep->direct = attr_true(ep->mem, s_kernel_map_checked)) < 0)
		return -1;
	/* Everything that can fail to read, before anything is changed. */
	if (api->reg_read(s->regfile, s->krp_sp_id, &sp) < 0 || krp_current(s, &task) < 0)
		return 0;
	if (task) {		/* current_comm_pid() */
		for (i = 0; i < (ep->comm_len + 7) / 8; i++)
			if (ev_read(s, ep, task + ep->comm_off + 8 * i, 8, &comm[i]) < 0)
				return 0;
		if (ev_read(s, ep, task + ep->pid_off, 4, &pid) < 0)
			return 0;
		comm_len = (int)strnlen((const char *)comm, ep->comm_len);
	}
	if (ep->ti_flags >= 0) {	/* flags_now()'s inputs */
		ti = sp & ~(ep->thread_size - 1);
		if (ev_read(s, ep, ti + ep->ti_flags, 8, &v) < 0)
			return 0;
		need = (int)(v >> ep->need_resched_bit & 1);
		if (ep->ti_preempt >= 0 && ev_read(s, ep, ti + ep->ti_preempt, 4, &preempt) < 0)
			return 0;
	}
	for (i = 0; i < ep->nargs; i++)
		if (ev_fetch(s, ep, &ep->args[i], ip, flags, sp, &vals[i]) < 0)
			return 0;

	rec = PyObject_GC_NewVar(RawRecord, &RawRecordType, ep->nargs);
	if (rec == NULL)
		return -1;
	rec->probe = Py_NewRef((PyObject *)ep);
	rec->ip_text = Py_NewRef(ip_text);
	rec->probe_addr = probe_addr;
	rec->clock = s->counter->executed;
	rec->pid = (int32_t)(uint32_t)pid;
	rec->preempt_count = (uint32_t)preempt;
	rec->need_resched = (char)need;
	if (task) {
		memcpy(rec->comm, comm, comm_len);
		rec->comm_len = comm_len;
	} else {
		memcpy(rec->comm, "<idle>", 6);
		rec->comm_len = 6;
	}
	memcpy(rec->values, vals, sizeof(uint64_t) * ep->nargs);
	PyObject_GC_Track(rec);
	i = ev_ring_write(ep, (PyObject *)rec);
	Py_DECREF(rec);
	if (i < 0)
		return -1;
	ep->nhit++;
	return 1;
}

/* -- EventProbe and RawRecord, the types -- */

static int ev_parse_arg(PyObject *t, struct ev_arg *a)
{
	PyObject *derefs;
	unsigned long long value, store_off;
	Py_ssize_t i;

	if (!PyArg_ParseTuple(t, "iKO!iKiiii:an event program's argument", &a->src, &value,
			      &PyTuple_Type, &derefs, &a->store, &store_off, &a->size,
			      &a->lshift, &a->rshift, &a->bits))
		return -1;
	a->value = value;
	a->store_off = store_off;
	a->nderefs = (int)PyTuple_GET_SIZE(derefs);
	if (a->src < EV_SRC_REG || a->src > EV_SRC_STACK || a->store < EV_ST_RAW ||
	    a->store > EV_ST_UMEM || (a->size != 1 && a->size != 2 && a->size != 4 &&
				      a->size != 8) || a->nderefs > EV_MAX_DEREFS ||
	    a->bits < 0 || a->bits > 64 || a->lshift < 0 || a->lshift >= 64 ||
	    a->rshift < 0 || a->rshift >= 64) {
		PyErr_SetString(PyExc_ValueError, "not an event program's argument");
		return -1;
	}
	for (i = 0; i < a->nderefs; i++) {
		unsigned long long off;

		if (!PyArg_ParseTuple(PyTuple_GET_ITEM(derefs, i), "pK:a dereference",
				      &a->deref[i].user, &off))
			return -1;
		a->deref[i].offset = off;
	}
	return 0;
}

static PyObject *ep_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
	static char *kwlist[] = {"handler", "event", "buffer", "listeners", "owner", "program",
				 "record_size", "page_size", "comm_off", "comm_len", "pid_off",
				 "thread_size", "ti_flags", "ti_preempt", "need_resched_bit",
				 "mem", "ram", "ram_size", "kernel_map", NULL};
	PyObject *handler, *event, *buffer, *listeners, *owner, *program, *mem;
	unsigned long long comm_off, pid_off, thread_size, ram, ram_size, kernel_map;
	long long ti_flags, ti_preempt;
	long record_size, page_size;
	int comm_len, bit;
	EventProbe *ep;
	Py_ssize_t i;

	if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOO!OO!llKiKKLLiOKKK:EventProbe",
					 kwlist, &handler, &event, &buffer, &PyList_Type,
					 &listeners, &owner, &PyTuple_Type, &program, &record_size,
					 &page_size, &comm_off, &comm_len, &pid_off, &thread_size,
					 &ti_flags, &ti_preempt, &bit, &mem, &ram, &ram_size,
					 &kernel_map))
		return NULL;
	if (!PyCallable_Check(handler) || PyTuple_GET_SIZE(program) > EV_MAX_ARGS ||
	    comm_len < 0 || comm_len > EV_COMM_MAX || record_size <= 0 ||
	    record_size > page_size || thread_size == 0 ||
	    (thread_size & (thread_size - 1)) || bit < 0 || bit >= 64 || ram == 0) {
		PyErr_SetString(PyExc_ValueError, "EventProbe: a bad handler, program or layout");
		return NULL;
	}
	ep = (EventProbe *)type->tp_alloc(type, 0);
	if (ep == NULL)
		return NULL;
	ep->nargs = (int)PyTuple_GET_SIZE(program);
	for (i = 0; i < ep->nargs; i++)
		if (ev_parse_arg(PyTuple_GET_ITEM(program, i), &ep->args[i]) < 0) {
			Py_DECREF(ep);
			return NULL;
		}
	ep->handler = Py_NewRef(handler);
	ep->event = Py_NewRef(event);
	ep->buffer = Py_NewRef(buffer);
	ep->listeners = Py_NewRef(listeners);
	ep->owner = Py_NewRef(owner);
	ep->place = Py_NewRef(Py_None);
	ep->mem = Py_NewRef(mem);
	ep->ram = (const unsigned char *)(uintptr_t)ram;
	ep->ram_size = ram_size;
	ep->kernel_map = kernel_map;
	ep->record_size = record_size;
	ep->page_size = page_size;
	ep->comm_off = comm_off;
	ep->comm_len = comm_len;
	ep->pid_off = pid_off;
	ep->thread_size = thread_size;
	ep->ti_flags = ti_flags;
	ep->ti_preempt = ti_preempt;
	ep->need_resched_bit = bit;
	return (PyObject *)ep;
}

static PyObject *ep_call(EventProbe *ep, PyObject *args, PyObject *kwds)
{
	return PyObject_Call(ep->handler, args, kwds);
}

static int ep_traverse(EventProbe *ep, visitproc visit, void *arg)
{
	Py_VISIT(ep->handler);
	Py_VISIT(ep->event);
	Py_VISIT(ep->buffer);
	Py_VISIT(ep->listeners);
	Py_VISIT(ep->owner);
	Py_VISIT(ep->place);
	Py_VISIT(ep->mem);
	return 0;
}

static int ep_clear(EventProbe *ep)
{
	Py_CLEAR(ep->handler);
	Py_CLEAR(ep->event);
	Py_CLEAR(ep->buffer);
	Py_CLEAR(ep->listeners);
	Py_CLEAR(ep->owner);
	Py_CLEAR(ep->place);
	Py_CLEAR(ep->mem);
	return 0;
}

static void ep_dealloc(EventProbe *ep)
{
	PyObject_GC_UnTrack(ep);
	ep_clear(ep);
	Py_TYPE(ep)->tp_free((PyObject *)ep);
}

static PyMemberDef ep_members[] = {
	{"nhit", T_ULONGLONG, offsetof(EventProbe, nhit), 0, "hits (TraceKprobe.nhit)"},
	{"owner", T_OBJECT, offsetof(EventProbe, owner), READONLY, "the TraceKprobe"},
	{"place", T_OBJECT, offsetof(EventProbe, place), 0,
	 "(probe address, its text in a trace line) or None: a hit elsewhere goes to Python"},
	{"handler", T_OBJECT, offsetof(EventProbe, handler), READONLY,
	 "the Python pre_handler it stands for"},
	{NULL},
};

static PyTypeObject EventProbeType = {
	PyVarObject_HEAD_INIT(NULL, 0)
	.tp_name = "kprobes.arch.x86_64._trap.EventProbe",
	.tp_doc = "EventProbe(handler, event, buffer, listeners, owner, program, record_size,\n"
		  "           page_size, comm_off, comm_len, pid_off, thread_size, ti_flags,\n"
		  "           ti_preempt, need_resched_bit, mem, ram, ram_size, kernel_map)\n"
		  "A kprobe event's pre_handler: `handler` when called, recorded in C at a hit\n"
		  "the C int3 takes (see kprobes/arch/x86_64/trap.c).",
	.tp_basicsize = sizeof(EventProbe),
	.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
	.tp_new = ep_new,
	.tp_call = (ternaryfunc)ep_call,
	.tp_traverse = (traverseproc)ep_traverse,
	.tp_clear = (inquiry)ep_clear,
	.tp_dealloc = (destructor)ep_dealloc,
	.tp_members = ep_members,
};

static int rr_traverse(RawRecord *rec, visitproc visit, void *arg)
{
	Py_VISIT(rec->probe);
	Py_VISIT(rec->ip_text);
	return 0;
}

static int rr_clear(RawRecord *rec)
{
	Py_CLEAR(rec->probe);
	Py_CLEAR(rec->ip_text);
	return 0;
}

static void rr_dealloc(RawRecord *rec)
{
	PyObject_GC_UnTrack(rec);
	rr_clear(rec);
	PyObject_GC_Del(rec);
}

static PyObject *rr_get_owner(RawRecord *rec, void *closure)
{
	if (rec->probe == NULL)
		Py_RETURN_NONE;
	return Py_NewRef(((EventProbe *)rec->probe)->owner != NULL ?
			 ((EventProbe *)rec->probe)->owner : Py_None);
}

static PyObject *rr_get_comm(RawRecord *rec, void *closure)
{
	return PyUnicode_DecodeLatin1(rec->comm, rec->comm_len, NULL);
}

static PyObject *rr_get_values(RawRecord *rec, void *closure)
{
	Py_ssize_t n = Py_SIZE(rec), i;
	PyObject *out = PyList_New(n);

	for (i = 0; out != NULL && i < n; i++) {
		PyObject *v = PyLong_FromUnsignedLongLong(rec->values[i]);

		if (v == NULL)
			Py_CLEAR(out);
		else
			PyList_SET_ITEM(out, i, v);
	}
	return out;
}

static PyObject *rr_get_need_resched(RawRecord *rec, void *closure)
{
	return PyBool_FromLong(rec->need_resched);
}

static PyMemberDef rr_members[] = {
	{"probe_addr", T_ULONGLONG, offsetof(RawRecord, probe_addr), READONLY, "the probe's address"},
	{"ip_text", T_OBJECT, offsetof(RawRecord, ip_text), READONLY,
	 "the probe's place as the trace line prints it"},
	{"clock", T_ULONGLONG, offsetof(RawRecord, clock), READONLY, "the guest clock at the hit"},
	{"pid", T_INT, offsetof(RawRecord, pid), READONLY, "current's pid (0: none)"},
	{"preempt_count", T_UINT, offsetof(RawRecord, preempt_count), READONLY,
	 "thread_info's preempt count"},
	{NULL},
};

static PyGetSetDef rr_getset[] = {
	{"owner", (getter)rr_get_owner, NULL, "the TraceKprobe that recorded it"},
	{"comm", (getter)rr_get_comm, NULL, "current's comm (\"<idle>\": none)"},
	{"values", (getter)rr_get_values, NULL, "the fetch arguments' values (a new list)"},
	{"need_resched", (getter)rr_get_need_resched, NULL, "TIF_NEED_RESCHED at the hit"},
	{NULL},
};

static PyTypeObject RawRecordType = {
	PyVarObject_HEAD_INIT(NULL, 0)
	.tp_name = "kprobes.arch.x86_64._trap.RawRecord",
	.tp_doc = "One kprobe event hit as trap.c's C path records it: read, not formatted.",
	.tp_basicsize = offsetof(RawRecord, values),
	.tp_itemsize = sizeof(uint64_t),
	.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
	.tp_traverse = (traverseproc)rr_traverse,
	.tp_clear = (inquiry)rr_clear,
	.tp_dealloc = (destructor)rr_dealloc,
	.tp_members = rr_members,
	.tp_getset = rr_getset,
};

/* -- int3 ------------------------------------------------------------------ */

/* Like kprobe_handler() in trap.py, for the plain hit. */
static int ts_int3(PyObject *owner, unsigned int vector, uint64_t *ip, uint64_t *flags)
{
	KprobeCtlblk *s = (KprobeCtlblk *)owner;
	uint64_t addr = *ip - 1, slot;
	PyObject *p, *ainsn = NULL, *pre = NULL, *regs = NULL, *res = NULL;
	const struct hit_layout *layout;
	struct hit_layout layout_copy;
	struct seen_probe *seen;
	long resume = -1;
	int disabled, if_modifier, in_post, changed, code = -1;

	if (check_entry(s, "the int3 handler", vector, 3) < 0)
		return -1;
	if (!s->fastpath || s->running || observed(s) || s->resume_hit != Py_None)
		return to_python(s->slow_int3, vector, ip, flags);
	p = table_probe(s, addr);
	if (p == NULL) {
		if (PyErr_Occurred())
			return -1;
		return to_python(s->slow_int3, vector, ip, flags);	/* not ours */
	}
	Py_INCREF(p);
	layout = hit_layout(s, p, &layout_copy);
	disabled = hit_true(p, layout, HS_DISABLED);
	if (disabled == 0)	/* an address Linux's own kprobes share: Python decides */
		disabled = hit_true(p, layout, HS_GUEST_SHARED);
	if (disabled != 0) {
		Py_DECREF(p);
		return disabled < 0 ? -1 : to_python(s->slow_int3, vector, ip, flags);
	}
	ainsn = hit_attr(p, layout, HS_AINSN);
	if (ainsn == NULL)
		goto out;
	seen = &s->seen[addr % SEEN_SIZE];
	if (seen->probe != p || seen->ainsn != ainsn) {
		PyObject *kretprobe;

		if (attr_u64(ainsn, s_slot, &slot) < 0 ||
		    (if_modifier = attr_true(ainsn, s_if_modifier)) < 0 ||
		    (res = PyObject_GetAttr(ainsn, s_resume)) == NULL ||
		    ((resume = PyLong_AsLong(res)) == -1 && PyErr_Occurred()) ||
		    (in_post = attr_true(p, s_resume_in_post_handler)) < 0 ||
		    (kretprobe = PyObject_GetAttr(p, s_kretprobe)) == NULL)
			goto out;
		Py_CLEAR(res);
		Py_XSETREF(seen->probe, Py_NewRef(p));
		Py_XSETREF(seen->ainsn, Py_NewRef(ainsn));
		Py_XSETREF(seen->kretprobe, kretprobe);
		seen->slot = slot;
		seen->resume = resume;
		seen->if_modifier = if_modifier;
		seen->in_post = in_post;
	}
	slot = seen->slot;
	resume = seen->resume;
	if_modifier = seen->if_modifier;
	in_post = seen->in_post;
	if (resume == RESUME_REP) {	/* its step needs the registers before it: Python */
		code = to_python(s->slow_int3, vector, ip, flags);
		goto out;
	}
	if ((pre = hit_attr(p, layout, HS_PRE)) == NULL)
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

	if (s->krp_table != NULL && p == s->krp_tramp_probe) {
		code = trampoline_probe_handler_c(s, p, ip, flags);
		if (code != KPEMU_TRAP_DECLINE)
			goto out;
		code = -1;
	} else if (s->krp_table != NULL && seen->kretprobe != Py_None) {
		PyObject *rp = Py_NewRef(seen->kretprobe);
		int done = pre_handler_kretprobe_c(s, rp);

		Py_DECREF(rp);
		if (done < 0)
			goto out;
		if (done)
			Py_SETREF(pre, Py_NewRef(Py_None));	/* its work is done */
	}
	if (pre != Py_None && Py_IS_TYPE(pre, &EventProbeType)) {
		int done = event_record_c(s, (EventProbe *)pre, addr, *ip, *flags);

		if (done < 0)
			goto out;
		if (done)	/* recorded: as if the handler had returned 0 */
			Py_SETREF(pre, Py_NewRef(Py_None));
	}
	if (pre != Py_None) {
		PyObject *argv[2];

		regs = trap_regs(s, *ip, *flags);
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
	const struct hit_layout *layout;
	struct hit_layout layout_copy;
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
	layout = hit_layout(s, p, &layout_copy);
	if ((post = hit_attr(p, layout, HS_POST)) == NULL ||
	    (disabled = hit_true(p, layout, HS_DISABLED)) < 0)
		goto out;

	s->n_debug++;
	/* 1. the post_handler, with regs.ip still in the slot */
	if (post != Py_None && !disabled) {
		PyObject *argv[3];

		s->status = KPROBE_HIT_SSDONE;
		regs = trap_regs(s, *ip, *flags);
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
	Py_VISIT(s->krp_table);
	Py_VISIT(s->krp_tramp_probe);
	Py_VISIT(s->krp_manager);
	Py_VISIT(s->spare_regs);
	for (int i = 0; i < SEEN_SIZE; i++) {
		Py_VISIT(s->seen[i].probe);
		Py_VISIT(s->seen[i].ainsn);
		Py_VISIT(s->seen[i].kretprobe);
	}
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
	Py_CLEAR(s->krp_table);
	Py_CLEAR(s->krp_tramp_probe);
	Py_CLEAR(s->krp_manager);
	Py_CLEAR(s->spare_regs);
	for (int i = 0; i < SEEN_SIZE; i++)
		seen_clear(&s->seen[i]);
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

static PyObject *kcb_forget(KprobeCtlblk *s, PyObject *arg)
{
	unsigned long long addr = PyLong_AsUnsignedLongLongMask(arg);

	if (PyErr_Occurred())
		return NULL;
	seen_clear(&s->seen[addr % SEEN_SIZE]);
	Py_RETURN_NONE;
}

static PyObject *kcb_set_kretprobes(KprobeCtlblk *s, PyObject *args, PyObject *kwds)
{
	static char *kwlist[] = {"table", "trampoline_probe", "manager", "tramp_addr",
				 "gs_base_id", "sp_id", "current_offset", NULL};
	PyObject *table, *tp, *manager;
	unsigned long long tramp, offset;
	int gs_id, sp_id;

	if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!OOKiiK:set_kretprobes", kwlist,
					 &PyList_Type, &table, &tp, &manager, &tramp, &gs_id,
					 &sp_id, &offset))
		return NULL;
	if (PyList_GET_SIZE(table) != 64) {
		PyErr_SetString(PyExc_ValueError, "the kretprobe table has 64 buckets");
		return NULL;
	}
	Py_XSETREF(s->krp_table, Py_NewRef(table));
	Py_XSETREF(s->krp_tramp_probe, Py_NewRef(tp));
	Py_XSETREF(s->krp_manager, Py_NewRef(manager));
	s->krp_tramp = tramp;
	s->krp_gs_id = gs_id;
	s->krp_sp_id = sp_id;
	s->krp_current = offset;
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
	{"forget", (PyCFunction)kcb_forget, METH_O,
	 "forget(probe_addr): drop what the C path keeps of the probe at probe_addr\n"
	 "(arch remove: the probe may be freed)."},
	{"set_kretprobes", (PyCFunction)(void (*)(void))kcb_set_kretprobes,
	 METH_VARARGS | METH_KEYWORDS,
	 "set_kretprobes(table, trampoline_probe, manager, tramp_addr, gs_base_id, sp_id,\n"
	 "               current_offset)\n"
	 "Let the C path take the common return-probe cases of design \"task\"."},
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

	if (intern(&s_disabled, "disabled") || intern(&s_guest_shared, "guest_shared") ||
	    intern(&s_ainsn, "ainsn") || intern(&s_slot, "slot") ||
	    intern(&s_if_modifier, "if_modifier") ||
	    intern(&s_resume, "resume") || intern(&s_pre_handler, "pre_handler") ||
	    intern(&s_post_handler, "post_handler") ||
	    intern(&s_resume_in_post_handler, "resume_in_post_handler") ||
	    intern(&s_kretprobe, "kretprobe") || intern(&s_entry_handler, "entry_handler") ||
	    intern(&s_free_instances, "free_instances") ||
	    intern(&s_used_instances, "used_instances") || intern(&s_entries, "entries") ||
	    intern(&s_returns, "returns") || intern(&s_handler, "handler") ||
	    intern(&s_handling, "handling") || intern(&s_data_size, "data_size") ||
	    intern(&s_no_instance, "no_instance") || intern(&s_kp, "kp") ||
	    intern(&s_symbol_name, "symbol_name") ||
	    intern(&s_orphans_returned, "orphans_returned") || intern(&s_misses, "misses") ||
	    intern(&s_orphaned, "orphaned") ||
	    intern(&s_enabled, "enabled") || intern(&s_kernel_map_checked, "kernel_map_checked") || intern(&s_written, "written") ||
	    intern(&s_overrun, "overrun") || intern(&s_used, "used") ||
	    intern(&s_pages, "pages") || intern(&s_nr_pages, "nr_pages") ||
	    intern(&s_popleft, "popleft") || intern(&s_append, "append") ||
	    (zero = PyLong_FromLong(0)) == NULL || (one = PyLong_FromLong(1)) == NULL)
		return NULL;
	hs_names[HS_PRE] = s_pre_handler;
	hs_names[HS_POST] = s_post_handler;
	hs_names[HS_AINSN] = s_ainsn;
	hs_names[HS_DISABLED] = s_disabled;
	hs_names[HS_GUEST_SHARED] = s_guest_shared;
	api = PyCapsule_Import(KPEMU_API_CAPSULE, 0);
	if (api == NULL)
		return NULL;
	errors = PyImport_ImportModule("kprobes.errors");
	if (errors == NULL)
		return NULL;
	KprobeBug = PyObject_GetAttrString(errors, "KprobeBug");
	Py_DECREF(errors);
	if (KprobeBug == NULL || PyType_Ready(&KprobeCtlblkType) < 0 ||
	    PyType_Ready(&KretprobeInstanceType) < 0 || PyType_Ready(&EventProbeType) < 0 ||
	    PyType_Ready(&RawRecordType) < 0)
		return NULL;
	m = PyModule_Create(&module);
	if (m == NULL)
		return NULL;
	/* The C trap handlers, for emu._fastpath.CTrapHandler(capsule, kcb). */
	if (add_capsule(m, "INT3", &int3_handler) < 0 ||
	    add_capsule(m, "DEBUG", &debug_handler) < 0 ||
	    PyModule_AddObjectRef(m, "KprobeCtlblk", (PyObject *)&KprobeCtlblkType) < 0 ||
	    PyModule_AddObjectRef(m, "KretprobeInstance", (PyObject *)&KretprobeInstanceType) < 0 ||
	    PyModule_AddObjectRef(m, "EventProbe", (PyObject *)&EventProbeType) < 0 ||
	    PyModule_AddObjectRef(m, "RawRecord", (PyObject *)&RawRecordType) < 0 ||
	    PyModule_AddIntConstant(m, "EV_SRC_REG", EV_SRC_REG) < 0 ||
	    PyModule_AddIntConstant(m, "EV_SRC_IP", EV_SRC_IP) < 0 ||
	    PyModule_AddIntConstant(m, "EV_SRC_FLAGS", EV_SRC_FLAGS) < 0 ||
	    PyModule_AddIntConstant(m, "EV_SRC_IMM", EV_SRC_IMM) < 0 ||
	    PyModule_AddIntConstant(m, "EV_SRC_STACK", EV_SRC_STACK) < 0 ||
	    PyModule_AddIntConstant(m, "EV_ST_RAW", EV_ST_RAW) < 0 ||
	    PyModule_AddIntConstant(m, "EV_ST_MEM", EV_ST_MEM) < 0 ||
	    PyModule_AddIntConstant(m, "EV_ST_UMEM", EV_ST_UMEM) < 0 ||
	    PyModule_AddIntConstant(m, "EV_MAX_ARGS", EV_MAX_ARGS) < 0 ||
	    PyModule_AddIntConstant(m, "EV_MAX_DEREFS", EV_MAX_DEREFS) < 0 ||
	    PyModule_AddIntConstant(m, "EV_COMM_MAX", EV_COMM_MAX) < 0 ||
	    PyModule_AddIntConstant(m, "KPROBE_HIT_ACTIVE", KPROBE_HIT_ACTIVE) < 0 ||
	    PyModule_AddIntConstant(m, "KPROBE_HIT_SS", KPROBE_HIT_SS) < 0 ||
	    PyModule_AddIntConstant(m, "KPROBE_REENTER", KPROBE_REENTER) < 0 ||
	    PyModule_AddIntConstant(m, "KPROBE_HIT_SSDONE", KPROBE_HIT_SSDONE) < 0 ||
	    PyModule_AddIntConstant(m, "RESUME_RELOCATE", RESUME_RELOCATE) < 0 ||
	    PyModule_AddIntConstant(m, "RESUME_PUSHF", RESUME_PUSHF) < 0 ||
	    PyModule_AddIntConstant(m, "RESUME_RET", RESUME_RET) < 0 ||
	    PyModule_AddIntConstant(m, "RESUME_CALL", RESUME_CALL) < 0 ||
	    PyModule_AddIntConstant(m, "RESUME_CALL_ABS", RESUME_CALL_ABS) < 0 ||
	    PyModule_AddIntConstant(m, "RESUME_JMP_ABS", RESUME_JMP_ABS) < 0 ||
	    PyModule_AddIntConstant(m, "RESUME_REP", RESUME_REP) < 0)
		goto fail;
	return m;
fail:
	Py_DECREF(m);
	return NULL;
}
