"""Write kpemu's initramfs: a cpio archive ("newc", what the kernel's populate_rootfs
reads) holding /init, the workload's programs in /bin, its data files in /etc (the
kprobe_events definitions init writes into tracefs when asked), the mount points the init
uses and /dev/console, which the kernel opens as init's stdin/stdout/stderr.

Every field that could vary between builds is fixed (owner 0, mtime 0, inode numbers in
order), so the same programs give the same bytes.

usage: python3 mkinitramfs.py OUT.cpio BUILD/bin/init BUILD/bin/PROG... [--etc FILE...]
"""

import os
import stat
import sys

NEWC_MAGIC = b"070701"
CONSOLE_MAJOR, CONSOLE_MINOR = 5, 1


def _pad4(n):
    return (4 - n % 4) % 4


def entry(ino, name, mode, data=b"", rdev=(0, 0), nlink=1):
    """One newc record: the 110-byte header, the NUL-terminated name and the data, each
    padded to 4 bytes."""
    name_b = name.encode() + b"\0"
    fields = (ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1], len(name_b), 0)
    head = NEWC_MAGIC + b"".join(b"%08x" % f for f in fields)
    return (head + name_b + b"\0" * _pad4(len(head) + len(name_b))
            + data + b"\0" * _pad4(len(data)))


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def build(init, programs, etc_files=()):
    records = []
    ino = 1
    for d in ("dev", "proc", "sys", "tmp", "bin", "etc"):
        records.append(entry(ino, d, stat.S_IFDIR | 0o755, nlink=2))
        ino += 1
    records.append(entry(ino, "dev/console", stat.S_IFCHR | 0o600,
                         rdev=(CONSOLE_MAJOR, CONSOLE_MINOR)))
    ino += 1
    for name, path in [("init", init)] + [(f"bin/{os.path.basename(p)}", p) for p in programs]:
        records.append(entry(ino, name, stat.S_IFREG | 0o755, _read(path)))
        ino += 1
    for path in etc_files:
        records.append(entry(ino, f"etc/{os.path.basename(path)}", stat.S_IFREG | 0o644,
                             _read(path)))
        ino += 1
    records.append(entry(0, "TRAILER!!!", 0))
    archive = b"".join(records)
    return archive + b"\0" * _pad4(len(archive))


def main(argv):
    args, etc_files = argv, []
    if "--etc" in argv:
        at = argv.index("--etc")
        args, etc_files = argv[:at], sorted(argv[at + 1:])
    if len(args) < 3:
        sys.exit("usage: mkinitramfs.py OUT.cpio INIT [PROGRAM...] [--etc FILE...]")
    out, init, programs = args[1], args[2], sorted(args[3:])
    programs = [p for p in programs if os.path.basename(p) != "init"]
    with open(out, "wb") as f:
        f.write(build(init, programs, etc_files))


if __name__ == "__main__":
    main(sys.argv)
