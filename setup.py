# The one thing pyproject.toml cannot say portably across setuptools versions:
# the C instruction counter (emu/_icount.c), built when the package is installed.
from setuptools import Extension, setup

setup(ext_modules=[Extension("emu._icount", sources=["emu/_icount.c"])])
