# The one thing pyproject.toml cannot say portably across setuptools versions: kpemu's
# two C extensions, built when the package is installed.
#   emu._fastpath      the C Unicorn callbacks: the instruction counter that is the guest
#                      clock, and the interrupt hook's native register traffic;
#   kprobes._trapfast  the bookkeeping of a plain kprobe hit (int3 + #DB), in C.
from setuptools import Extension, setup

setup(ext_modules=[
    Extension("emu._fastpath", sources=["emu/_fastpath.c"], depends=["emu/kpemu.h"]),
    Extension("kprobes._trapfast", sources=["kprobes/_trapfast.c"],
              depends=["emu/kpemu.h"]),
])
