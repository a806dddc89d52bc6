"""Guest kernel images kpemu boots, built from the sources beside them (make images)."""

from pathlib import Path

TOYKERNEL = Path(__file__).resolve().parent / "toykernel" / "vmlinux"
# The module the teaching demos load (kpemu demo fixups); committed beside its source.
LESSON_TARGETS = Path(__file__).resolve().parent / "lessons" / "lesson_targets.o"
