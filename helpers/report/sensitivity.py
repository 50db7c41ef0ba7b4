"""What would decide an undecided comparison: the orderings and examples that show its damage with
80% power as a mean over new orderings and examples (the random-effects model of
:func:`helpers.report.stats.variance_components`), and what one more ordering costs, from
``make bench``'s figures (docs/power.md)."""
from __future__ import annotations

import json
import math
from pathlib import Path

from scipy import stats as sps

from ..editing import base_method
from . import stats

POWER = 0.8
# An assumption, not a measurement (no GPU was available to measure it): a 135M-parameter model on
# one data-centre GPU runs these edits and evaluations about this many times faster than 2 CPU cores.
GPU_SPEEDUP = 20.0
BENCH = Path(__file__).resolve().parents[2] / "bench" / "results.json"
PROMPTS_PER_EXAMPLE = 1.375  # 8 tasks, NER's 4 prompts per sentence (make bench's eval set: 66 prompts, 48 examples)


def _bench() -> dict:
    try:
        return json.loads(BENCH.read_text())
    except (OSError, ValueError):
        return {}


def seconds_per_ordering(method: str, facts: int, evaluations: int, n: int, tasks: int = 8) -> float:
    """Estimated seconds on 2 cores for one more edit ordering of a chain: ``facts`` edited facts
    at make bench's seconds per edit of ``method`` (``edit.<method>.seconds_per_edit``), and
    ``evaluations`` evaluations of ``tasks`` tasks at ``n`` examples at its prompts per second
    (``eval.engine``). NaN when make bench has not measured the method."""
    bench = _bench()
    name = base_method(method.split(" + ")[0])  # a rescue's edits cost about what its base method's do
    per_edit = bench.get(f"edit.{name}.seconds_per_edit", math.nan)
    per_prompt = 1.0 / bench.get("eval.engine", {}).get("prompts_per_s", math.nan)
    return float(facts * per_edit + evaluations * n * tasks * PROMPTS_PER_EXAMPLE * per_prompt)


def needed(effect: stats.Effect, target: float, power: float = POWER) -> dict[str, float]:
    """What would decide a damage of size ``target`` with probability ``power``, as a mean over
    new orderings and examples (the random-effects model of :func:`helpers.report.stats.variance_components`),
    at the error each of the family's intervals may spend (:attr:`helpers.report.stats.Effect.alpha`;
    normal approximation): ``orderings`` at the run's examples, ``examples`` at the run's orderings
    (inf where more of the other cannot decide it: the orderings' spread alone is too large), and
    the SDs of the components (``sd_orderings`` between orderings; ``sd_examples`` over the
    examples within one ordering: examples and interaction together)."""
    c = effect.components
    n, s = effect.examples, effect.orderings
    z = sps.norm.ppf(1 - effect.alpha / 2) + sps.norm.ppf(power)
    room = (abs(target) / z) ** 2
    v_o = c.get("orderings", math.nan)
    v_e, v_oe = c.get("examples", math.nan), c.get("interaction", 0.0)
    if v_o != v_o:  # one ordering: its spread cannot be measured
        v_o, v_oe = 0.0, 0.0
    out = {"sd_orderings": math.sqrt(v_o), "sd_examples": math.sqrt(v_e + v_oe), "target": abs(target)}
    left = room - v_e / n
    out["orderings"] = math.ceil((v_o + v_oe / n) / left) if left > 0 else math.inf
    left = room - v_o / s
    out["examples"] = math.ceil((v_e + v_oe / s) / left) if left > 0 else math.inf
    return out




__all__ = ["GPU_SPEEDUP", "POWER", "seconds_per_ordering", "needed"]
