# The one thing pyproject.toml cannot say portably across setuptools versions: kpemu's
# C extension, built when the package is installed: emu._fastpath, the C Unicorn
# callbacks (the instruction counter that is the guest clock, the interrupt hook's native
# register traffic) and the pt_regs view.
from setuptools import Extension, setup

setup(ext_modules=[
    Extension("emu._fastpath", sources=["emu/_fastpath.c"], depends=["emu/kpemu.h"]),
])
