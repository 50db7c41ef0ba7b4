"""``make bench``, memory: a child process making sequential ROME edits, its memory read from
/proc (``python -m bench.memory EDITS`` is that child)."""
from __future__ import annotations

import json
import re
import subprocess
import sys


def _mb(key: str) -> float:
    return int(re.search(key + r":\s+(\d+)", open("/proc/self/status").read()).group(1)) / 1024


def sequential_memory(edits: int) -> dict:
    """Memory of a child process that loads the model and makes ``edits`` sequential ROME
    edits (weights changed in place; only the edited matrix's originals are kept). Read from
    /proc (VmHWM: the peak; ``ru_maxrss`` would carry over the parent's peak through exec).
    The weights are a file mapping (safetensors), so they count once the first forward pass
    touches them; ``anon_growth_mb`` is what editing allocated beyond that (after each edit;
    a copy of the model would add its whole size)."""
    out = subprocess.run([sys.executable, "-m", "bench.memory", str(edits)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def child(edits: int) -> dict:
    """The child's work: load the model, ``edits`` sequential ROME edits, memory at each step."""
    import torch  # noqa: F401  (counted among the libraries, before the model)

    from helpers import load_model
    from helpers.data import load_zsre
    from helpers.editing import edit
    from helpers.editing.mend import split_zsre

    imports = _mb("VmRSS")
    m, t = load_model()
    loaded = _mb("VmRSS")
    size = sum(p.numel() * 4 for p in m.parameters()) / 2**20
    anon0, anon = _mb("RssAnon"), 0.0
    for r in split_zsre(load_zsre())[1][:edits]:
        edit(m, t, r, "ROME")
        anon = max(anon, _mb("RssAnon"))
    return {"imports_mb": imports, "after_load_mb": loaded, "peak_mb": _mb("VmHWM"), "model_fp32_mb": size,
            "anon_growth_mb": anon - anon0}


if __name__ == "__main__":
    print(json.dumps(child(int(sys.argv[1]))))
