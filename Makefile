# The README's two commands, `make run` and `make test`, work on a fresh machine: they
# create .venv and install kpemu (with its C hooks) into it first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.kpemu-installed
QEMU   ?= qemu-system-x86_64
IMAGE  ?= kernel_images/toykernel/vmlinux
APPEND ?=

.PHONY: run test fuzz images bench bytecode demos qemu qemu-for-tests clean

$(STAMP): pyproject.toml setup.py emu/_fastpath.c emu/_tsc.c emu/kpemu.h kprobes/arch/x86_64/trap.c
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	$(MAKE) --no-print-directory bytecode
	touch $@

# What pip does for an installed package, for the editable one: the modules' bytecode
# written once, so that a `kpemu` run (and a benchmark of one) does not compile them again
# where Python may not write it (PYTHONDONTWRITEBYTECODE).  Only changed sources are
# compiled again.
bytecode:
	$(PY) -m compileall -q emu kprobes bench > /dev/null

run: $(STAMP) bytecode
	$(VENV)/bin/kpemu boot $(IMAGE)

# Two workers (pytest-xdist), one a core; worksteal, because the whole-image differential's
# two runs are half the suite and an idle worker takes over tests still queued elsewhere.
test: $(STAMP) qemu-for-tests chromium-for-tests
	$(PY) -m pytest -n 2 --dist worksteal

# The QEMU tests (tests/qemu, marker qemu) need qemu-system-x86_64.  When it is missing,
# install Debian's package if we can (root with apt-get, as in CI); if we cannot, say why
# and those tests skip with their reason.  Silent when it is already there.
qemu-for-tests:
	@$(call apt-for-tests,qemu-system-x86_64,qemu-system-x86,the QEMU tests)
	@$(call apt-for-tests,tmux,tmux,the stepper's terminal test (tests/demos))

# $(call apt-for-tests,COMMAND,PACKAGE,WHO): install Debian's PACKAGE when COMMAND is
# missing and we can (root with apt-get, as in CI); if we cannot, say why -- WHO then
# skips with its reason.  Silent when COMMAND is already there.
apt-for-tests = if command -v $(1) >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "make: installing $(2) for $(3)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends $(2) >/dev/null; \
	else \
	  echo "make: $(1) not found and not installed (needs root and apt-get): $(3) will skip"; \
	fi

# The lesson pages' browser test (tests/pages/test_browser.py) drives Debian's chromium
# through Playwright (its Python package is in the test extra; no browser is downloaded).
.PHONY: chromium-for-tests
chromium-for-tests:
	@$(call apt-for-tests,chromium,chromium,the lesson pages' browser test (tests/pages))

# The fuzz campaign's long form (tests/fuzz): FUZZ_EXAMPLES fresh random inputs per category
# instead of the few hundred fixed ones `make test` runs; prints the figures at the end.
FUZZ_EXAMPLES ?= 5000
fuzz: $(STAMP)
	KPEMU_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest tests/fuzz

# The Linux image's offsets are read from its DWARF with pyelftools, which is in the venv.
images: $(STAMP)
	$(MAKE) -C kernel_images/toykernel
	$(MAKE) -C kernel_images/lessons
	$(MAKE) -C kernel_images/linux PYTHON=$(abspath $(PY))

# The demos' committed transcripts (demos/NAME_example.txt), golden lesson traces
# (tests/demos/golden) and index (docs/demos.md), re-generated from the demos; the tests
# compare them byte for byte, so this is the explicit step a changed lesson needs.
demos: $(STAMP)
	$(PY) -m kprobes.demos.transcript --write

bench: $(STAMP) bytecode
	$(PY) -m bench

# The same image under QEMU, on an instruction-count clock (docs: README, "QEMU").
qemu:
	$(QEMU) -accel tcg -nographic -no-reboot -net none -icount shift=0,sleep=off \
	  -device isa-debug-exit,iobase=0xf4,iosize=0x04 -kernel $(IMAGE) -append "$(APPEND)"; \
	  status=$$?; echo "qemu exit status $$status (guest code $$(( (status - 1) / 2 )))"

clean:
	rm -rf $(VENV) build *.egg-info
