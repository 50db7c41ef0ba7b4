"""Power analysis: from a pilot's per-example records, the smallest paired damage a chosen number
of examples per task can detect (docs/power.md).

For each task and checkpoint of a pilot chain, :func:`helpers.report.stats.paired_damage` gives
the damage and its standard error ``se`` at the pilot's n, which fixes the per-example spread of
the paired difference, ``sd = se × √n`` (for a mean, the standard deviation of the per-example
differences; for NER's F1 and the gold NLL, which are ratios, that of their jackknife values). With ``n`` examples the smallest damage seen
beyond zero with probability ``power`` by a Bonferroni-adjusted interval over ``tasks`` tasks is

    (z₁₋α/(2·tasks) + z_power) × sd / √n

and the examples needed to see a damage ``d`` are ``((z₁₋α/(2·tasks) + z_power) × sd / d)²``
(normal approximations; ``scipy.stats.norm``). With several orderings, :func:`needed` adds the
spread between orderings (docs/power.md), and :func:`seconds_per_ordering` prices one more ordering
from ``make bench``'s figures. ``python -m helpers.report.power`` runs a pilot
(a ROME chain and MEMIT batches, one ordering, the profile's n) into
``figures/<profile>/pilot/`` and writes its table there (``tables/power.csv`` and ``.md``).
"""
from __future__ import annotations

import argparse
import math
import sys

import pandas as pd
from scipy import stats as sps

from . import stats
from .judge import judge_measure, unedited_row
from .sensitivity import GPU_SPEEDUP, POWER, needed, seconds_per_ordering  # noqa: F401  (re-exported)

def detectable(sd: float, n: int, tasks: int = 8, level: float = 0.95, power: float = POWER) -> float:
    """The smallest damage ``n`` examples detect (see the module text)."""
    z = sps.norm.ppf(1 - (1 - level) / (2 * tasks)) + sps.norm.ppf(power)
    return z * sd / math.sqrt(n)


def examples_needed(sd: float, damage: float, tasks: int = 8, level: float = 0.95, power: float = POWER) -> float:
    """How many examples detect ``damage`` (see the module text); inf for no damage."""
    if not damage or damage != damage:
        return math.inf
    z = sps.norm.ppf(1 - (1 - level) / (2 * tasks)) + sps.norm.ppf(power)
    return (z * sd / abs(damage)) ** 2


def power_table(records: pd.DataFrame, ns=(20, 40, 80, 160), protocol: str = "paper") -> pd.DataFrame:
    """Per (chain, checkpoint, task) of a pilot's records (one ordering): the measure that
    judges the task, the damage against the unedited model with its 95% interval, the
    per-example spread ``sd``, the smallest damage each of ``ns`` detects
    (``detectable_n<N>``), and the examples the pilot's damage needs (``n_needed``)."""
    out = []
    for chain, c in records.groupby("chain", sort=False):
        base = c[c.edits == 0]
        tasks = list(dict.fromkeys(base.task))
        for task in tasks:
            before = base[base.task == task]
            before = before[before.ordering == before.ordering.min()] if "ordering" in before else before
            measure = judge_measure(unedited_row(before, task, protocol))
            for edits in sorted(set(c.edits) - {0}):
                after = c[(c.edits == edits) & (c.task == task)]
                after = after[after.ordering == after.ordering.min()] if "ordering" in after else after
                eff = stats.paired_damage([after], before, task, protocol, measure)
                n = eff.examples
                sd = eff.se * math.sqrt(n)
                out.append({"chain": chain, "edits": edits, "task": task, "measure": measure, "pilot_n": n,
                            "damage": eff.estimate, "low": eff.low, "high": eff.high, "sd": sd,
                            **{f"detectable_n{k}": detectable(sd, k, len(tasks)) for k in ns},
                            "n_needed": examples_needed(sd, eff.estimate, len(tasks))})
    return pd.DataFrame(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="cpu", help="the profile whose model, n, seed and results store to use")
    ap.add_argument("--checkpoints", type=int, nargs="+", default=[0, 10, 25, 50],
                    help="the pilot ROME chain's checkpoints (numbers of edits)")
    ap.add_argument("--n", type=int, default=None, help="examples per task (default: the profile's side-effect n)")
    ap.add_argument("--memit-batch", type=int, nargs="*", default=[],
                    help="MEMIT batch-single sizes to add to the pilot (one ordering)")
    args = ap.parse_args(argv)
    from ..runs import sweep
    from .reproduce import figures_dir, load_profile
    from .tables import write_records, write_table

    profile = load_profile(args.profile)
    side = profile["notebooks"]["01_side_effects"]
    n = args.n or side["n"]
    out_dir = figures_dir(args.profile) / "pilot"  # its own store: make reproduce is timed from empty
    grid = [sweep.Chain("ROME", 1, tuple(args.checkpoints), seed=profile.get("seed", 0))]
    grid += [sweep.Chain("MEMIT", b, (0, 1), setting="batch-single", seed=profile.get("seed", 0))
             for b in args.memit_batch]
    call = dict(n=n, seed=profile.get("seed", 0), hparams=side.get("hparams") or {},
                store=out_dir / "results" / "side_effects.jsonl")
    sweep.side_effects(grid, profile["model"], **call)
    records = sweep.side_effect_records(grid, profile["model"], **call)
    table = power_table(records)
    write_records(records, out_dir, "power_pilot_examples")
    path = write_table(table, out_dir, "power")
    print(path.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
