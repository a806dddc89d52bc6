"""The CPU pieces a Linux guest needs, on a scratch Engine with hand-made page tables, GDT,
TSS and IDT: a #PF's CR2 and error code twice in a row (the "exception in progress" reset),
syscall/sysretq, a timer interrupt taken in ring 3 on the TSS stack and left with iretq,
host reads of kernel-only memory while ring 3 runs, rdtsc/rdtscp from the clock."""

import ctypes
import struct
from types import SimpleNamespace

import pytest
from keystone import KS_ARCH_X86, KS_MODE_64, Ks
from unicorn import x86_const
from unicorn.unicorn_py3.unicorn import uclib

from emu import interrupts
from emu.engine import Engine
from emu.linux import LinuxGuest
from emu.memory import Memory


def unicorn_translate(eng, va):
    """Unicorn's own uc_vmem_translate (with the CPU's current privilege), or None: what
    kpemu's host reads must not rely on."""
    uclib.uc_vmem_translate.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int,
                                        ctypes.POINTER(ctypes.c_uint64)]
    pa = ctypes.c_uint64()
    status = uclib.uc_vmem_translate(eng.uc._uch, va, 1, ctypes.byref(pa))
    return None if status else pa.value


RAM = 4 << 20
PML4, PDPT, PD = 0x10000, 0x11000, 0x12000
GDT, TSS, IDT = 0x13000, 0x13800, 0x14000
KCODE, KENTRY, UCODE, TIMER = 0x1000, 0x2000, 0x3000, 0x2800
USTACK, KSTACK = 0x80000, 0x90000
KERNEL_ONLY = 0x200000           # VA 2-4 MiB -> PA 0, supervisor-only
P, W, U, PS = 1, 2, 4, 0x80
MSR_EFER, MSR_STAR, MSR_LSTAR, MSR_FMASK, MSR_TSC_AUX = (0xC0000080, 0xC0000081, 0xC0000082,
                                                         0xC0000084, 0xC0000103)
GDT_ENTRIES = [0, 0x00AF9A000000FFFF, 0x00CF92000000FFFF, 0x00CFF2000000FFFF,
               0x00AFFA000000FFFF]        # null, kernel code/data, user data, user code
KCS, KDS, UDS, UCS, TSS_SEL = 0x08, 0x10, 0x1B, 0x23, 0x28


SYSRETQ = b"\x48\x0f\x07"           # keystone does not know the mnemonic


def asm(text, addr):
    return bytes(Ks(KS_ARCH_X86, KS_MODE_64).asm(text, addr)[0])


@pytest.fixture
def cpu():
    eng = Engine(RAM)
    mem = Memory(eng)
    w = mem.write_phys
    w(PML4, struct.pack("<Q", PDPT | P | W | U))
    w(PDPT, struct.pack("<Q", PD | P | W | U))
    w(PD, struct.pack("<QQ", 0 | P | W | U | PS, 0 | P | W | PS))   # 0-2 MiB user, 2-4 MiB not
    tss_desc_lo = 0x67 | (TSS & 0xFFFFFF) << 16 | 0x89 << 40 | (TSS >> 24 & 0xFF) << 56
    w(GDT, struct.pack("<5QQQ", *GDT_ENTRIES, tss_desc_lo, TSS >> 32))
    w(TSS + 4, struct.pack("<Q", KSTACK))                          # RSP0
    gate = struct.pack("<HHBBHII", TIMER & 0xFFFF, KCS, 0, 0x8E, TIMER >> 16 & 0xFFFF,
                       TIMER >> 32, 0)
    w(IDT + 32 * 16, gate)
    eng.set_table_reg("gdtr", GDT, 7 * 8 - 1)
    eng.set_table_reg("idtr", IDT, 256 * 16 - 1)
    eng.uc.reg_write(x86_const.UC_X86_REG_TR, (TSS_SEL, TSS, 0x67, 0x89))
    eng.set_reg("cr3", PML4)
    eng.set_reg("cr4", eng.reg("cr4") | 0x20)
    eng.set_reg("cr0", eng.reg("cr0") | 0x80000001)
    eng.enter_ring0(KCS, GDT_ENTRIES[1] >> 32, KDS, GDT_ENTRIES[2] >> 32)
    eng.set_msr(MSR_EFER, eng.msr(MSR_EFER) | 1)                   # SCE
    eng.set_msr(MSR_STAR, (0x10 << 48) | (KCS << 32))
    eng.set_msr(MSR_LSTAR, KENTRY)
    eng.set_msr(MSR_FMASK, 0x200)                                  # IF off on entry
    eng.set_reg("sp", KSTACK - 0x100)
    return eng, mem


def test_two_page_faults_in_a_row_each_with_cr2_and_error_code(cpu):
    eng, mem = cpu
    load = asm("mov rax, [0x400000]", KCODE)
    store = asm("mov [0x600000], rax", KCODE + len(load))
    mem.write_phys(KCODE, load + store + b"\x90")
    seen = []

    def fault(vector, ip, flags):
        seen.append((vector, ip, eng.cr2(), eng.take_exception()))
        eng.set_reg("ip", ip + (len(load) if ip == KCODE else len(store)))
        return True

    eng.on_interrupt = fault
    eng.start(KCODE, KCODE + len(load) + len(store))
    # read of a not-present page: error code 0; write: 2 (W).  Not a #DF the second time.
    assert seen == [(14, KCODE, 0x400000, 0), (14, KCODE + len(load), 0x600000, 2)]


def test_without_the_reset_the_second_fault_is_a_double_fault(cpu):
    eng, mem = cpu
    load = asm("mov rax, [0x400000]", KCODE)
    mem.write_phys(KCODE, load * 2 + b"\x90")
    seen = []

    def fault(vector, ip, flags):
        seen.append(vector)
        eng.set_reg("ip", ip + len(load))
        if len(seen) == 2:
            eng.stop_now()
        return True

    eng.on_interrupt = fault
    eng.start(KCODE, KCODE + 2 * len(load))
    assert seen == [14, 8]


def test_syscall_sysret_round_trip_and_a_timer_interrupt_taken_in_ring3(cpu):
    eng, mem = cpu
    # ring 0: enter user mode; the syscall entry sets rbx and returns with sysretq
    mem.write_phys(KCODE, asm(f"mov rcx, {UCODE}; mov r11, 0x202", KCODE) + SYSRETQ)
    mem.write_phys(KENTRY, asm("mov rbx, rax; add rbx, 1", KENTRY) + SYSRETQ)
    mem.write_phys(TIMER, asm("add qword ptr [0x70000], 1; iretq", TIMER))
    user = asm(f"mov rsp, {USTACK}; mov rax, 41; syscall; mov rdx, rbx; spin: jmp spin", UCODE)
    mem.write_phys(UCODE, user)
    guest = SimpleNamespace(m=SimpleNamespace(engine=eng))
    in_syscall = []

    def syscall():
        in_syscall.append((eng.cpl, eng.reg("ip")))
        LinuxGuest._syscall(guest)
        in_syscall.append((eng.cpl, eng.reg("cx"), eng.reg("r11") & 0x200,
                           eng.reg("flags") & 0x200, eng.reg("cs"), eng.reg("ss")))

    eng.on_syscall = syscall
    eng.start(KCODE, 0, 40)
    syscall_at = UCODE + len(asm(f"mov rsp, {USTACK}; mov rax, 41", UCODE))
    after = syscall_at + 2
    assert in_syscall == [(3, syscall_at), (0, after, 0x200, 0, KCS, KDS)]
    assert (eng.cpl, eng.reg("cs"), eng.reg("ss"), eng.reg("dx")) == (3, UCS, UDS, 42)
    spin_ip, user_sp = eng.reg("ip"), eng.reg("sp")
    assert spin_ip >= after and user_sp == USTACK

    # host reads of kernel-only memory while ring 3 runs: Unicorn's translation refuses them
    assert unicorn_translate(eng, KERNEL_ONLY + KCODE) is None
    assert mem.read(KERNEL_ONLY + KCODE, 4) == mem.read_phys(KCODE, 4)

    interrupts.deliver(eng, mem, 32)          # the timer, as the machine delivers an IRQ
    frame = struct.unpack("<5Q", mem.read(KSTACK - 40, 40))
    assert frame == (spin_ip, UCS, 0x202, USTACK, UDS)
    assert (eng.cpl, eng.reg("cs"), eng.reg("sp"), eng.reg("ip")) == (0, KCS, KSTACK - 40, TIMER)
    eng.start(TIMER, 0, eng.executed + 2)     # the handler's add and iretq
    assert (eng.cpl, eng.reg("cs"), eng.reg("ss"), eng.reg("ip"), eng.reg("sp")) == \
        (3, UCS, UDS, spin_ip, USTACK)
    assert mem.read_phys(0x70000, 8) == struct.pack("<Q", 1)


def test_rdtsc_and_rdtscp_read_the_instruction_clock(cpu):
    eng, mem = cpu
    code = asm("nop; nop; rdtsc; mov r8, rax; mov r9, rdx; rdtscp", KCODE)
    mem.write_phys(KCODE, code + b"\x90")
    eng.set_msr(MSR_TSC_AUX, 0x1005)
    eng.icount.executed = (7 << 32) + 100
    eng.start(KCODE, KCODE + len(code))
    # rdtsc is the 3rd instruction counted from 7<<32 + 100, rdtscp the 6th
    assert (eng.reg("r8"), eng.reg("r9")) == (103, 7)
    assert (eng.reg("ax"), eng.reg("dx"), eng.reg("cx")) == (106, 7, 0x1005)


def test_cpuid_offers_no_rdrand_and_osxsave_follows_cr4(cpu):
    eng, mem = cpu
    code = asm("mov eax, 1; cpuid; mov r8, rcx; mov r9, rbx; xor eax, eax; cpuid", KCODE)
    mem.write_phys(KCODE, code + b"\x90")
    eng.set_reg("cr4", eng.reg("cr4") & ~(1 << 18))
    eng.start(KCODE, KCODE + len(code))
    leaf1 = eng.reg("r8")
    assert not leaf1 & (1 << 30)                  # RDRAND: host randomness, hidden
    assert not leaf1 & (1 << 27)                  # OSXSAVE: CR4.OSXSAVE is clear
    assert leaf1 & (1 << 26)                      # XSAVE itself is offered
    vendor = struct.pack("<III", eng.reg("bx"), eng.reg("dx"), eng.reg("cx"))
    assert vendor == b"GenuineIntel"              # leaf 0: Unicorn's own answer
    eng.set_reg("cr4", eng.reg("cr4") | (1 << 18))
    eng.start(KCODE, KCODE + len(code))
    assert eng.reg("r8") == leaf1 | (1 << 27)
