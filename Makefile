# The README's two commands, `make run` and `make test`, work on a fresh machine: they
# create .venv and install kpemu (with its C hooks) into it first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.kpemu-installed
QEMU   ?= qemu-system-x86_64
IMAGE  ?= kernel_images/toykernel/vmlinux
APPEND ?=

.PHONY: run test fuzz images bench qemu qemu-for-tests clean

$(STAMP): pyproject.toml setup.py emu/_fastpath.c emu/_tsc.c emu/kpemu.h kprobes/arch/x86_64/trap.c
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

run: $(STAMP)
	$(VENV)/bin/kpemu boot $(IMAGE)

# Two workers (pytest-xdist), one a core; worksteal, because the whole-image differential's
# two runs are half the suite and an idle worker takes over tests still queued elsewhere.
test: $(STAMP) qemu-for-tests
	$(PY) -m pytest -n 2 --dist worksteal

# The QEMU tests (tests/qemu, marker qemu) need qemu-system-x86_64.  When it is missing,
# install Debian's package if we can (root with apt-get, as in CI); if we cannot, say why
# and those tests skip with their reason.  Silent when it is already there.
qemu-for-tests:
	@if command -v qemu-system-x86_64 >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "make: installing qemu-system-x86 for the QEMU tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends qemu-system-x86 >/dev/null; \
	else \
	  echo "make: qemu-system-x86_64 not found and not installed (needs root and apt-get):" \
	       "the QEMU tests will skip"; \
	fi

# The fuzz campaign's long form (tests/fuzz): FUZZ_EXAMPLES fresh random inputs per category
# instead of the few hundred fixed ones `make test` runs; prints the figures at the end.
FUZZ_EXAMPLES ?= 5000
fuzz: $(STAMP)
	KPEMU_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest tests/fuzz

images:
	$(MAKE) -C kernel_images/toykernel
	$(MAKE) -C kernel_images/linux

bench: $(STAMP)
	$(PY) -m bench

# The same image under QEMU, on an instruction-count clock (docs: README, "QEMU").
qemu:
	$(QEMU) -accel tcg -nographic -no-reboot -net none -icount shift=0,sleep=off \
	  -device isa-debug-exit,iobase=0xf4,iosize=0x04 -kernel $(IMAGE) -append "$(APPEND)"; \
	  status=$$?; echo "qemu exit status $$status (guest code $$(( (status - 1) / 2 )))"

clean:
	rm -rf $(VENV) build *.egg-info
