"""Take the structure layouts kpemu needs from the kernel's DWARF (pyelftools) and write
them as JSON beside the committed image, so that the host reads Linux's task_struct, the
per-CPU `current_task` and pt_regs through offsets the compiler chose, never through
numbers typed by hand.

Only the compilation units that define what is wanted are read (the whole vmlinux's DWARF
would take minutes): kernel/fork.c has task_struct, mm_struct and pt_regs complete, and
fs/proc/array.c has task_state_array, whose strings name the task states; kernel/kprobes.c
has struct kprobe, whose table (kprobe_table) kpemu reads where Linux's kprobes and its own
share an address (docs/linux-kprobes.md).  THREAD_SIZE is
what the linker script reserves for the init task's stack (__start_init_task ..
__end_init_task, INIT_TASK_DATA), the one place the size is laid out.

usage: python3 extract_offsets.py BUILD/linux-source-6.1/vmlinux offsets.json
"""

import json
import sys

from elftools.elf.elffile import ELFFile

WANTED_UNITS = ("kernel/fork.c", "fs/proc/array.c", "kernel/kprobes.c")
# struct -> the members wanted ("a.b" descends into member a's type)
STRUCTS = {
    "task_struct": ("__state", "flags", "pid", "tgid", "comm", "stack", "mm", "active_mm",
                    "tasks", "exit_code", "exit_state", "real_parent", "thread.sp"),
    "mm_struct": ("pgd",),
    "kprobe": ("hlist", "addr", "opcode", "flags"),
    "list_head": ("next", "prev"),
    "pt_regs": ("r15", "r14", "r13", "r12", "bp", "bx", "r11", "r10", "r9", "r8", "ax", "cx",
                "dx", "si", "di", "orig_ax", "ip", "cs", "flags", "sp", "ss"),
}
SIZES = ("task_struct", "pt_regs")


def _attr(die, name, default=None):
    a = die.attributes.get(name)
    return a.value if a is not None else default


def _strip(die):
    """The type behind typedefs and qualifiers."""
    while die is not None and die.tag in ("DW_TAG_typedef", "DW_TAG_const_type",
                                          "DW_TAG_volatile_type"):
        die = die.get_DIE_from_attribute("DW_AT_type") if "DW_AT_type" in die.attributes \
            else None
    return die


def _members(die, base=0):
    """name -> (offset, member DIE) of a struct/union, anonymous members flattened."""
    out = {}
    for m in die.iter_children():
        if m.tag != "DW_TAG_member":
            continue
        off = base + _attr(m, "DW_AT_data_member_location", 0)
        name = _attr(m, "DW_AT_name")
        if name is None:
            out.update(_members(_strip(m.get_DIE_from_attribute("DW_AT_type")), off))
        else:
            out[name.decode()] = (off, m)
    return out


def _member_offset(struct_die, path):
    off, die = 0, struct_die
    for part in path.split("."):
        members = _members(die)
        if part not in members:
            raise SystemExit(f"extract_offsets: {path} not in {_attr(struct_die, 'DW_AT_name')}")
        delta, m = members[part]
        off += delta
        die = _strip(m.get_DIE_from_attribute("DW_AT_type"))
    return off, die


def _read_pointer(elf, addr):
    for sec in elf.iter_sections():
        start = sec["sh_addr"]
        if sec["sh_type"] != "SHT_NOBITS" and start <= addr < start + sec["sh_size"]:
            data = sec.data()
            return int.from_bytes(data[addr - start:addr - start + 8], "little")
    raise SystemExit(f"extract_offsets: {addr:#x} is in no section with contents")


def _read_string(elf, addr):
    for sec in elf.iter_sections():
        start = sec["sh_addr"]
        if sec["sh_type"] != "SHT_NOBITS" and start <= addr < start + sec["sh_size"]:
            data = sec.data()
            return data[addr - start:data.index(b"\0", addr - start)].decode()
    raise SystemExit(f"extract_offsets: {addr:#x} is in no section with contents")


def _symbols(elf):
    return {s.name: s["st_value"] for s in elf.get_section_by_name(".symtab").iter_symbols()
            if s.name}


def extract(path):
    with open(path, "rb") as f:
        elf = ELFFile(f)
        dwarf = elf.get_dwarf_info()
        structs, sizes, state_array = {}, {}, None
        for cu in dwarf.iter_CUs():
            top = cu.get_top_DIE()
            name = (_attr(top, "DW_AT_name") or b"").decode()
            if not name.endswith(WANTED_UNITS):
                continue
            for die in top.iter_children():
                dname = _attr(die, "DW_AT_name")
                dname = dname.decode() if dname else None
                if die.tag in ("DW_TAG_structure_type", "DW_TAG_union_type") and \
                        "DW_AT_declaration" not in die.attributes:
                    if dname in STRUCTS and dname not in structs:
                        structs[dname] = {p: _member_offset(die, p)[0] for p in STRUCTS[dname]}
                        if dname == "task_struct":
                            comm = _member_offset(die, "comm")[1]
                            sub = next(comm.iter_children())
                            structs[dname]["comm_len"] = _attr(sub, "DW_AT_upper_bound") + 1
                    if dname in SIZES and dname not in sizes:
                        sizes[dname] = _attr(die, "DW_AT_byte_size")
                elif die.tag == "DW_TAG_variable" and dname == "task_state_array":
                    arr = _strip(die.get_DIE_from_attribute("DW_AT_type"))
                    state_array = _attr(next(arr.iter_children()), "DW_AT_upper_bound") + 1
        missing = [s for s in STRUCTS if s not in structs] + [s for s in SIZES if s not in sizes]
        if missing or state_array is None:
            raise SystemExit(f"extract_offsets: not found in {WANTED_UNITS}: "
                             f"{missing or 'task_state_array'}")
        syms = _symbols(elf)
        names = [_read_string(elf, _read_pointer(elf, syms["task_state_array"] + 8 * i))
                 for i in range(state_array)]
    return {
        "source": "DWARF of the unstripped vmlinux (extract_offsets.py)",
        "thread_size": syms["__end_init_task"] - syms["__start_init_task"],
        "sizes": {"task_struct": sizes["task_struct"], "pt_regs": sizes["pt_regs"]},
        "structs": structs,
        "per_cpu": {"current_task": "current_task"},
        "task_state_array": names,
    }


def main(argv):
    if len(argv) != 3:
        raise SystemExit("usage: extract_offsets.py VMLINUX OUT.json")
    data = extract(argv[1])
    with open(argv[2], "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main(sys.argv)
