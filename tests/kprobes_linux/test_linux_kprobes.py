"""kprobes and kretprobes on the real Linux 6.1 guest (kernel_images/linux), end to end on
its workload: kpemu's own area mapped into Linux's page tables and seen from every process,
`current` as Linux's current_task, return values of real functions in both kretprobe
designs, on both trap paths, the instances of dead tasks flushed where Linux releases
them, Linux's blacklist, Linux's own int3s left to Linux -- and every probed run identical
to the unprobed one (console, exit code, clock).  The KUnit-style checks of the toy kernel
have their twins here on real functions: pre/post order, regs.ip == addr + 1, nmissed,
maxactive, stack traces through the trampoline."""

import errno

import pytest

from emu import Machine
from emu.linux import BIOS_RESERVED_TOP, KPEMU_AREA_VA, e820_map
from emu.memory import START_KERNEL_MAP
from kprobes import Kprobe, KprobeError, Kprobes, Kretprobe
from tests.linux import LINUX_IMAGE

pytestmark = pytest.mark.slow

# What the workload's sources make (kernel_images/linux/workload): init forks one child per
# program in init.c's order (fsops 14, forkexec 15, pipes 17, fib 19, sleeper 20);
# forkexec forks 16 and pipes forks 18.  The console prints these pids (test_linux_boot).
FORK_PIDS = [14, 15, 16, 17, 18, 19, 20]
FORKS = [("init", 14), ("init", 15), ("forkexec", 16), ("init", 17), ("pipes", 18),
         ("init", 19), ("init", 20)]
# fsops.c opens note.txt for writing, again for reading, then /proc/self/stat.
OPENS = ["/tmp/work/note.txt", "/tmp/work/note.txt", "/proc/self/stat"]
EXITS = 7                 # every forked task exits; init powers off instead


def read_user_string(m, addr):
    out = bytearray()
    while len(out) < 256:
        b = m.read(addr + len(out), 1)
        if b == b"\0":
            return out.decode()
        out += b
    raise AssertionError("unterminated")


def watch_workload(m, k):
    """Register the probes every full-run test here reads; return what they record."""
    seen = {"order": [], "opens": [], "forks": [], "ip_delta": set(), "walks": set(),
            "stack": [], "raw_stack": []}
    init_pgd = m.image.symbol_value("init_top_pgt") - START_KERNEL_MAP

    def pre(p, regs):
        seen["order"].append("pre")
        seen["ip_delta"].add(regs.ip - p.addr)
        cur = m.current
        seen["opens"].append((cur.comm, cur.pid, read_user_string(m, regs.si)))
        # the slot, seen through this process's page tables, is the one init_mm maps
        cr3 = m.engine.reg("cr3") & ~0xFFF
        seen["walks"].add((cr3 != init_pgd, m.mem.walk(p.ainsn.slot)))
        return 0

    def post(p, regs, flags):
        seen["order"].append("post")

    def clone_ret(ri, regs):
        seen["forks"].append((m.current.comm, regs.ax))

    def write_ret(ri, regs):
        seen["stack"].append(m.format_trace(m.stack_trace(regs))[:2])
        seen["raw_stack"].append(m.format_trace(m.stack_trace(regs, resolve=False))[:2])

    seen["open_kp"] = Kprobe(symbol_name="do_sys_openat2", pre_handler=pre,
                             post_handler=post)
    seen["clone_rp"] = Kretprobe(symbol_name="kernel_clone", handler=clone_ret)
    seen["exit_rp"] = Kretprobe(symbol_name="do_exit", handler=lambda ri, regs: None)
    seen["write_rp"] = Kretprobe(symbol_name="vfs_write", handler=write_ret)
    k.register_kprobe(seen["open_kp"])
    k.register_kretprobes([seen["clone_rp"], seen["exit_rp"], seen["write_rp"]])
    return seen


def probed_run(linux_booted, design, fastpath, extra=None):
    m, snap = linux_booted
    m.restore(snap)
    k = Kprobes(m, kretprobe_design=design)
    k.arch.fastpath = fastpath
    seen = watch_workload(m, k)
    if extra:
        extra(m, k, seen)
    seen["result"] = m.run()
    # Read now: the machine is shared, and the next test restores it.
    seen.update(m=m, k=k, console=m.console, clock=m.clock.now,
                instances=k.kretprobes.instances(), area=m.insn_area(),
                tramp_text=(m.read(KPEMU_AREA_VA, 1), k.original_byte(KPEMU_AREA_VA)),
                slot_pa=m.mem.walk(seen["open_kp"].ainsn.slot),
                in_flight={ri.rp.kp.symbol_name: m.guest.read_task(ri.task)
                           for ri in k.kretprobes.instances() if ri.rp is not None})
    return seen


@pytest.fixture(scope="module")
def task_run(linux_booted):
    """Design "task" on the C trap path, with a maxactive=1 kretprobe on __schedule."""
    def extra(m, k, seen):
        seen["sched_rp"] = Kretprobe(symbol_name="__schedule", maxactive=1,
                                     handler=lambda ri, regs: None)
        k.register_kretprobe(seen["sched_rp"])
    return probed_run(linux_booted, "task", True, extra)


@pytest.fixture(scope="module")
def stack_run(linux_booted):
    """Design "stack" (June 2005's), on the Python trap path."""
    return probed_run(linux_booted, "stack", False)


@pytest.fixture(params=["task_run", "stack_run"])
def run(request):
    return request.getfixturevalue(request.param)


def test_a_probed_run_is_the_unprobed_run(run, linux_reference):
    assert run["result"].reason == "halt" and run["result"].exit_code == 0
    assert run["console"] == linux_reference["console"]
    assert run["clock"] == linux_reference["clock"]          # no footprint on guest time
    assert run["result"].insns == linux_reference["insns"]


def test_kpemu_area_is_mapped_for_every_process(run):
    m = run["m"]
    area = run["area"]
    tramp = m.symbols.lookup_name("kretprobe_trampoline")
    assert tramp == area.tramp_addr == KPEMU_AREA_VA
    assert m.symbols.format(tramp) == "kretprobe_trampoline+0x0/0x10 [kpemu]"
    assert run["tramp_text"] == (b"\xcc", 0x90)     # its probe, armed on the nop
    slot = run["open_kp"].ainsn.slot
    assert area.start < slot < area.end
    # Physically the top of RAM that the e820 map already reserves.
    pa = run["slot_pa"]
    top = m.engine.ram_size
    assert top - BIOS_RESERVED_TOP < pa < top
    assert (top - BIOS_RESERVED_TOP, BIOS_RESERVED_TOP, 2) in e820_map(top)
    # Within 2 GiB of the kernel text, so %rip-relative copies reach it.
    assert abs(slot - m.symbols.lookup_name("_etext")) < 1 << 31
    # Walked through fsops's page tables (not init_mm's) at the hit: the same page.
    assert run["walks"] == {(True, pa)}


def test_current_is_linuxs_current_task_and_handlers_run_in_order(run):
    assert [o[2] for o in run["opens"]] == OPENS
    assert {(o[0], o[1]) for o in run["opens"]} == {("fsops", 14)}
    assert run["order"] == ["pre", "post"] * len(OPENS)
    assert run["ip_delta"] == {1}                         # regs.ip == probe address + 1
    assert run["open_kp"].nmissed == 0


def test_kretprobe_gives_each_forks_child_pid(run):
    assert run["forks"] == FORKS
    rp = run["clone_rp"]
    assert (rp.entries, rp.returns, rp.nmissed) == (len(FORKS), len(FORKS), 0)


def test_dead_tasks_instances_are_flushed_where_linux_releases_them(run):
    """do_exit() never returns: each exiting task's instance stays until Linux releases
    the dead task (delayed_put_task_struct -> rethook_flush_task).  init reaps the last
    one (sleeper) and powers off before that RCU callback runs: one still in flight."""
    rp = run["exit_rp"]
    left = [ri for ri in run["instances"] if ri.rp is rp]
    assert (rp.entries, rp.returns, rp.nmissed) == (EXITS, 0, 0)
    assert rp.flushed == EXITS - 1 and len(left) == 1
    task = run["in_flight"]["do_exit"]       # reaped (EXIT_DEAD), not yet released
    assert (task.pid, task.comm, task.state) == (20, "sleeper", "dead")


def test_stack_trace_in_a_return_handler_goes_through_the_trampoline(run):
    """In vfs_write's return handler regs.ip is the trampoline's (+1, after its int3);
    the trace resolves it to the real return address in ksys_write, as Linux >= 5.15
    does, and the next frame is ksys_write's caller; the raw chain shows the trampoline."""
    assert len(run["stack"]) == run["write_rp"].returns > 0
    for resolved, raw in zip(run["stack"], run["raw_stack"]):
        assert resolved[0].startswith("ksys_write+") and \
            resolved[1].startswith("__x64_sys_write+")
        assert raw == ["kretprobe_trampoline+0x1/0x10 [kpemu]", resolved[1]]


def test_maxactive_and_nmissed_on_schedule(task_run):
    """maxactive=1 on __schedule: the one instance is taken by the first task that
    sleeps in it, and every other entry meanwhile misses (nmissed, cause maxactive)."""
    rp = task_run["sched_rp"]
    in_flight = [ri for ri in task_run["instances"] if ri.rp is rp]
    assert rp.nmissed > 0 and rp.miss_report() == {"maxactive": rp.nmissed}
    assert rp.entries == rp.returns + rp.nmissed + len(in_flight) + rp.flushed
    assert len(in_flight) <= 1


def test_the_blacklist_is_linuxs(lm):
    k = Kprobes(lm)
    listed = {name: why for _a, _b, name, why in k.blacklist()}
    expect = {"exc_int3": "in .noinstr.text", "exc_nmi": "in .noinstr.text",
              "exc_debug": "in .noinstr.text", "asm_exc_int3": "in .entry.text",
              "entry_SYSCALL_64": "in .entry.text", "do_int3": "NOKPROBE_SYMBOL",
              "kprobe_int3_handler": "NOKPROBE_SYMBOL", "oops_end": "NOKPROBE_SYMBOL",
              "kretprobe_trampoline": "kretprobe_trampoline"}
    assert {n: listed.get(n) for n in expect} == expect
    for name in expect:
        with pytest.raises(KprobeError) as exc:
            k.register_kprobe(Kprobe(symbol_name=name))
        assert exc.value.errno == errno.EINVAL and "blacklisted" in str(exc.value)
    assert "do_sys_openat2" not in listed and "kernel_clone" not in listed
    with pytest.raises(KprobeError) as exc:               # slots are not text
        k.register_kprobe(Kprobe(addr=KPEMU_AREA_VA + 0x1000))
    assert exc.value.errno == errno.EINVAL
    # Init text, freed before init runs, is no text (core_kernel_text()).
    with pytest.raises(KprobeError) as exc:
        k.register_kprobe(Kprobe(symbol_name="start_kernel"))
    assert exc.value.errno == errno.EINVAL and "not in kernel or module text" in str(exc.value)
    # A static call site Linux patches (static_call_text_reserved()).
    sites = [(a, what) for a, _b, what in lm.guest_patched_text()]
    assert len(sites) > 100 and {what for _a, what in sites} == {"a static call site"}
    site = next(a for a, _what in sites if lm.is_kernel_text(a))
    with pytest.raises(KprobeError) as exc:
        k.register_kprobe(Kprobe(addr=site))
    assert exc.value.errno == errno.EINVAL and "static call site" in str(exc.value)


def test_attached_before_boot_linuxs_own_int3_goes_to_linux(linux_booted):
    """Kprobes attached at power-on: the area is mapped through the image's own tables
    and survives Linux building its page tables; Linux's int3 self-test
    (alternative_instructions -> int3_selftest) traps into its own #BP handler, which
    handles it; a probe registered before boot hits as Linux boots, and one on init text
    goes [GONE] when Linux frees it."""
    m = Machine(LINUX_IMAGE)
    k = Kprobes(m)
    hits = []

    def pre(p, regs):
        hits.append(regs.ip)
        return 0

    k.register_kprobe(Kprobe(symbol_name="kernel_clone", pre_handler=pre))
    init_hits = []
    init_kp = Kprobe(symbol_name="kernel_init_freeable",         # __init: freed at boot
                     pre_handler=lambda p, regs: init_hits.append(regs.ip) and 0)
    k.register_kprobe(init_kp)
    init_byte = init_kp.opcode
    result = m.boot()
    ref_m, snap = linux_booted
    ref_m.restore(snap)
    assert result.reason == "boot"
    assert (m.console, m.clock.now) == (ref_m.console, ref_m.clock.now)
    assert k.traps["int3-foreign"] == 1 and k.traps["int3-vanished"] == 0
    assert len(hits) > 0                                   # the kernel threads' forks
    assert len(hits) + len(init_hits) == k.traps["int3"]
    assert m.mem.walk(KPEMU_AREA_VA) == m.engine.ram_size - BIOS_RESERVED_TOP + 0x1000
    # The probe on init text hit once, then went with it at free_initmem() (as Linux's
    # kprobe_free_init_mem() kills its own): [GONE], out of the trap path's table.
    assert len(init_hits) == 1 and init_kp.gone and init_kp.addr not in k.table
    assert f"{init_kp.addr:016x}  k  {init_kp.addr:#x} [GONE]" in k.list().splitlines()
    k.unregister_kprobe(init_kp)                  # nothing written into freed memory
    assert k.gone == {} and init_byte != 0xCC
