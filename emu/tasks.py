"""Guest tasks as the host sees them: task_struct fields read through the layout the image
exports (asm-offsets symbols), never through constants written here.

Must not import: unicorn, kprobes.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Task:
    addr: int          # guest address of the task_struct
    pid: int
    comm: str
    state: str         # "running", "sleeping", "zombie" or the raw number
    state_value: int
    stack: int         # base of its THREAD_SIZE-aligned stack
    saved_sp: int
    exit_code: int

    def __str__(self):
        return f"{self.comm}-{self.pid}"


class TaskLayout:
    """Offsets and constants of the guest's task structures, from the image."""

    def __init__(self, image):
        c = image.const
        self.thread_size = c("THREAD_SIZE")
        self.ti_task = c("TI_task")
        # Where the thread_info at a stack's base ends, as far as its exported fields
        # tell (each taken as a word): a stack pointer below it has overwritten them.
        self.thread_info_end = max(c(n) for n in ("TI_task", "TI_flags", "TI_preempt_count",
                                                  "TI_cpu")) + 8
        self.pda_pcurrent = c("PDA_pcurrent")
        # Where `current` is: %gs base + PDA_pcurrent (Machine.current_addr, and kprobes'
        # C trap path, read it so).
        self.current_segment = "gs_base"
        self.current_offset = self.pda_pcurrent
        # Everything runs in the kernel: no user space, no user addresses.
        self.has_user_space = False
        self.state = c("TASK_state")
        self.pid = c("TASK_pid")
        self.comm = c("TASK_comm")
        self.comm_len = c("TASK_COMM_LEN")
        self.thread_rsp = c("TASK_thread_rsp")
        self.stack = c("TASK_stack")
        self.tasks_next = c("TASK_tasks_next")
        self.exit_code = c("TASK_exit_code")
        self.state_names = {c("TASK_STATE_RUNNING"): "running",
                            c("TASK_STATE_INTERRUPTIBLE"): "sleeping",
                            c("TASK_STATE_ZOMBIE"): "zombie"}
        self.init_task = image.symbol_value("init_task")


def read_comm_pid(mem, layout, addr):
    """(comm, pid) of the task at `addr`, and nothing else of it: what a trace record
    takes at every hit (read_task() reads the whole task)."""
    comm = mem.read(addr + layout.comm, layout.comm_len).split(b"\0", 1)[0]
    return comm.decode("latin-1"), int.from_bytes(mem.read(addr + layout.pid, 4), "little",
                                                  signed=True)


def read_task(mem, layout, addr):
    comm, pid = read_comm_pid(mem, layout, addr)
    state = mem.u64(addr + layout.state)
    if state & (1 << 63):
        state -= 1 << 64
    exit_code = mem.u64(addr + layout.exit_code)
    if exit_code & (1 << 63):
        exit_code -= 1 << 64
    return Task(addr=addr,
                pid=pid, comm=comm,
                state=layout.state_names.get(state, str(state)),
                state_value=state,
                stack=mem.u64(addr + layout.stack),
                saved_sp=mem.u64(addr + layout.thread_rsp),
                exit_code=exit_code)


def walk_tasks(mem, layout, limit=4096):
    """Every task on the circular list through init_task, in list order."""
    out = []
    addr = layout.init_task
    while True:
        out.append(read_task(mem, layout, addr))
        addr = mem.u64(addr + layout.tasks_next)
        if addr in (0, layout.init_task) or len(out) >= limit:
            return out
