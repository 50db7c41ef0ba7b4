"""A process that computes three rows of a shared store (tests/integration/test_store_writers.py)."""
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
with store.writing():
    print("HOLDING", flush=True)
    rows = [store.row({"row": i}, lambda i=i: compute(i)) for i in range(3)]
print("ROWS", [r["value"] for r in rows], flush=True)
