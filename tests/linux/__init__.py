from pathlib import Path

LINUX_DIR = Path(__file__).resolve().parents[2] / "kernel_images" / "linux"
LINUX_IMAGE = LINUX_DIR / "vmlinux"
