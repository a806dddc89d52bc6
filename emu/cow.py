"""Copy-on-write guest RAM: what makes a snapshot cheap to take back.

A snapshot's RAM is a memfd holding the RAM as it was (its zero pages left as holes).  Guest
RAM is then remapped, at the same host address Unicorn was given, as a MAP_PRIVATE view of
that memfd: reads see the snapshot, the first write to a page (the guest's, or the host's
through the mmap) gives this mapping a private copy of it.  Those private copies are
exactly the pages changed since the snapshot, and the kernel tells which they are:
/proc/self/pagemap marks a page "file-page or shared-anon" (bit 61) until it is copied.
Restoring is then, for the changed pages only, MADV_DONTNEED (the private copy goes, the
page reads the memfd again) -- a cost in the pages the run changed, not in the RAM size.

Linux only (memfd_create, pagemap, MAP_FIXED over a live mapping).

Must not import: unicorn (the engine does), kprobes.
"""

import ctypes
import mmap
import os
import weakref

from emu.errors import MachineError

PAGE_SIZE = 0x1000
_CHUNK = 64 * PAGE_SIZE
_ZERO_CHUNK = bytes(_CHUNK)

_PROT_READ_WRITE = mmap.PROT_READ | mmap.PROT_WRITE
_MAP_PRIVATE = mmap.MAP_PRIVATE
_MAP_FIXED = 0x10
_MAP_FAILED = ctypes.c_void_p(-1).value

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long]

# A pagemap entry's top byte: bit 63 present, bit 62 swapped, bit 61 file-page/shared-anon.
# A page of the private view that is present or swapped and not the file's is a private
# copy: changed since the view was mapped.
_DIRTY_TOP_BYTE = bytes(1 if b & 0xC0 and not b & 0x20 else 0 for b in range(256))

_pagemap_fd = None


def _pagemap():
    global _pagemap_fd
    if _pagemap_fd is None:
        try:
            _pagemap_fd = os.open("/proc/self/pagemap", os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise MachineError(f"snapshots need /proc/self/pagemap: {exc}") from None
    return _pagemap_fd


class RamImage:
    """The RAM of one snapshot: a memfd, zero pages left as holes."""

    def __init__(self, ram, size):
        fd = os.memfd_create("kpemu-snapshot", os.MFD_CLOEXEC)
        self.fd = fd
        self.size = size
        weakref.finalize(self, os.close, fd)
        os.ftruncate(fd, size)
        for off in range(0, size, _CHUNK):
            chunk = ram[off:off + _CHUNK]
            if chunk != _ZERO_CHUNK:
                os.pwrite(fd, chunk, off)


def map_private(address, image):
    """Make [address, address+size) a private copy-on-write view of `image` (MAP_FIXED:
    the host address Unicorn holds stays valid; every page reads the image again)."""
    got = _libc.mmap(address, image.size, _PROT_READ_WRITE, _MAP_PRIVATE | _MAP_FIXED,
                     image.fd, 0)
    if got in (None, _MAP_FAILED) or got != address:
        err = ctypes.get_errno()
        raise MachineError(f"mmap of the snapshot over guest RAM failed: {os.strerror(err)}")


def changed_runs(address, size):
    """(offset, length) runs of the pages of the private view at `address` written since
    it was mapped (or since the last discard of them)."""
    first = address // PAGE_SIZE
    entries = os.pread(_pagemap(), (size // PAGE_SIZE) * 8, first * 8)
    marks = entries[7::8].translate(_DIRTY_TOP_BYTE)
    runs = []
    start = marks.find(1)
    while start >= 0:
        end = marks.find(0, start)
        if end < 0:
            end = len(marks)
        runs.append((start * PAGE_SIZE, (end - start) * PAGE_SIZE))
        start = marks.find(1, end)
    return runs


def discard(ram, runs):
    """Drop the private copies of `runs`: those pages read the image again."""
    for off, length in runs:
        ram.madvise(mmap.MADV_DONTNEED, off, length)
