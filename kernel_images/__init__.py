"""Guest kernel images kpemu boots, built from the sources beside them (make images)."""

from pathlib import Path

TOYKERNEL = Path(__file__).resolve().parent / "toykernel" / "vmlinux"
