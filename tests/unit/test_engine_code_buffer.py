"""Where the engine's translated code lives (emu/engine.py, Engine.__init__ and
_scratch_uc): Unicorn's code buffer within a rel32 call (2 GiB) of the helpers it calls --
libunicorn's text and kpemu's C hooks -- so that TCG never routes a call through its
per-block constant pool.  Checked in a fresh interpreter, as `kpemu boot` starts: the
start-up checks' scratch CPUs and the guest RAM are made first there too."""

import json
import os
import subprocess
import sys

import pytest

REL32_REACH = 1 << 31
RAM_SIZE = 128 << 20           # the Linux guest's
BIG = 512 << 20                # the code buffer is the only anonymous rwx mapping this big

PROBE = f"""
import json
from emu.engine import Engine
eng = Engine({RAM_SIZE})
eng.uc.mem_read(0, 1)
buffers, texts = [], []
for line in open("/proc/self/maps"):
    fields = line.split()
    lo, hi = (int(x, 16) for x in fields[0].split("-"))
    path = fields[5] if len(fields) > 5 else ""
    if fields[1] == "rwxp" and not path and hi - lo >= {BIG}:
        buffers.append((lo, hi))
    elif "x" in fields[1] and ("libunicorn" in path or "_fastpath" in path):
        texts.append((lo, hi))
print(json.dumps({{"buffers": buffers, "texts": texts}}))
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs Linux's /proc maps")
def test_code_buffer_is_within_call_reach_of_unicorn_and_kpemu_hooks():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         check=True, cwd=root).stdout
    maps = json.loads(out)
    assert len(maps["buffers"]) == 1, maps
    assert len(maps["texts"]) >= 2, maps        # libunicorn's text and _fastpath's
    (lo, hi), = maps["buffers"]
    for text_lo, text_hi in maps["texts"]:
        farthest = max(abs(text_hi - lo), abs(hi - text_lo))
        assert farthest < REL32_REACH, (hex(lo), hex(hi), hex(text_lo), hex(text_hi))
