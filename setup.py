# The one thing pyproject.toml cannot say portably across setuptools versions: kpemu's
# three C extensions, built when the package is installed.
#   emu._fastpath              the C Unicorn callbacks (the instruction counter that is
#                              the guest clock, the interrupt hook) and the pt_regs view;
#   emu._tsc                   rdtsc and rdtscp answered from that clock;
#   kprobes.arch.x86_64._trap  the per-CPU kprobes state, the bookkeeping of a plain
#                              kprobe hit (int3 + #DB) and the record of a kprobe event's.
from setuptools import Extension, setup

setup(ext_modules=[
    Extension("emu._fastpath", sources=["emu/_fastpath.c"], depends=["emu/kpemu.h"]),
    Extension("emu._tsc", sources=["emu/_tsc.c"], depends=["emu/kpemu.h"]),
    Extension("kprobes.arch.x86_64._trap", sources=["kprobes/arch/x86_64/trap.c"],
              depends=["emu/kpemu.h"]),
])
