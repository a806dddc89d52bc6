# The one thing pyproject.toml cannot say portably across setuptools versions:
# kpemu's C Unicorn callbacks (emu/_fastpath.c: the instruction counter that is the guest
# clock, and the interrupt hook's native register traffic), built when the package is
# installed.
from setuptools import Extension, setup

setup(ext_modules=[Extension("emu._fastpath", sources=["emu/_fastpath.c"])])
