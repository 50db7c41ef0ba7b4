"""A process that computes three rows of a shared store (tests/integration/test_store_writers.py).

With a third argument ``hold``, it holds the lock until a line arrives on stdin: the test releases
it only once the second writer has said that it waits, so the order does not depend on how fast
the second process starts. With ``lazy``, it writes in a lazy block (``writing(lazy=True)``:
the lock is taken at the first missing row)."""
import sys
import time

from helpers.runs.store import ResultStore

store_path, log_path = sys.argv[1], sys.argv[2]


def compute(i):
    with open(log_path, "a") as f:
        f.write(f"compute {i}\n")
    time.sleep(0.5)
    return {"value": i}


store = ResultStore(store_path)
with store.writing(lazy=sys.argv[3:] == ["lazy"]):
    print("HOLDING" if sys.argv[3:] == ["hold"] else "STARTED", flush=True)
    if sys.argv[3:] == ["hold"]:
        sys.stdin.readline()
    rows = [store.row({"row": i}, lambda i=i: compute(i)) for i in range(3)]
print("ROWS", [r["value"] for r in rows], flush=True)
