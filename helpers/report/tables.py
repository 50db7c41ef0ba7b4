"""The tables and figures a ``make reproduce`` run writes, and their names.

The names below are the contract between the notebooks, which write these tables, and
:mod:`.claims`, which reads them to judge the paper's claims: a notebook writes
``write_table(df, out_dir, SIDE_EFFECTS_ROWS)`` and the claims read ``read_table(out_dir,
SIDE_EFFECTS_ROWS)``; neither spells a file name. Tables go to ``<out_dir>/tables/<name>.csv``
with a Markdown copy beside it, per-prompt records to ``<out_dir>/tables/<name>.parquet``;
figures to ``<out_dir>/<name>.png`` and ``.pdf``.
"""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from ..files import atomic_write_text, load_parquet, save_parquet

# read by the claims (helpers.report.claims)
SIDE_EFFECTS_ROWS = "side_effects_rows"          # 01: one row per (chain, ordering, edits, task)
WEIGHT_CHANGE_TABLE1 = "table1_weight_change"    # 02: paper Table 1
RECT_ABLATION_ROWS = "rect_ablation_rows"        # 03: one row per (method, regulariser, record)
FIG8_ROWS = "fig8_rect_side_effects_rows"        # 03: Fig. 8, one row per (chain, ordering, edits, task)
RESCUE_ROWS = "rescues_rows"                     # 05: one row per (chain, ordering, edits, task)
# per-prompt records behind those rows (Parquet: write_records / read_records)
SIDE_EFFECTS_EXAMPLES = "side_effects_examples"  # 01
FIG8_EXAMPLES = "fig8_rect_side_effects_examples"  # 03
RESCUE_EXAMPLES = "rescues_examples"             # 05: the tasks' records
RESCUE_WINDOWS = "rescues_heldout_windows"       # 05: held-out perplexity, per window
RESCUE_EDITING = "rescues_editing_records"       # 05: editing performance, per edited record
HORIZON_EXAMPLES = "horizon_examples"            # 06: the tasks' records at 0 and downstream_at edits
HORIZON_WINDOWS = "horizon_heldout_windows"      # 06: held-out perplexity there, per window
HORIZON_EDITING = "horizon_editing_records"      # 06: editing performance there, per edited record
# written for people (wide or summarised forms of the above)
SIDE_EFFECTS = "side_effects"
EDIT_TRACES = "edit_traces"                      # 01: held-out NLL and norm growth after every edit
WEIGHT_CHANGE_ROWS = "weight_change_rows"
FIG7_SUMMARY = "fig7_rect_ablation"
FIG8 = "fig8_rect_side_effects"
UNEDITED_BASELINE = "unedited_baseline"
REGULARIZERS_OVER_K = "regularizers_over_k"
RESCUE_SIGNALS = "rescues_collapse_signals"
RESCUE_RANKING = "rescues_ranking"
RESCUE_RANK_SUMMARY = "rescues_rank_summary"
RESCUE_VS_FAMILY = "rescues_against_unregularized"
HORIZON_TRACES = "horizon_traces"                # 06: every chain's signals after every edit
HORIZON_COLLAPSE = "horizon_collapse_points"      # 06: each chain's collapse point per ordering
HORIZON = "horizon"                              # 06: the collapse points and each rescue's delay
HORIZON_RETENTION = "horizon_retention"           # 06: efficacy, retention, generalisation per checkpoint
HORIZON_DOWNSTREAM = "horizon_downstream"         # 06: each rescue against its plain chain on the tasks


def table_path(out_dir: str | os.PathLike, name: str) -> Path:
    """Where table ``name`` of a run writing to ``out_dir`` lives (its CSV)."""
    return Path(out_dir) / "tables" / f"{name}.csv"


def write_table(df: pd.DataFrame, out_dir: str | os.PathLike, name: str, floatfmt: str = ".3f") -> Path:
    """``df`` as ``<out_dir>/tables/<name>.csv`` and a Markdown table beside it (``.md``), each
    written to a temporary file first and renamed, so a reader never sees half a file."""
    path = table_path(out_dir, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, df.to_csv(index=False))
    atomic_write_text(path.with_suffix(".md"), to_markdown(df, floatfmt) + "\n")
    return path


def read_table(out_dir: str | os.PathLike, name: str) -> pd.DataFrame | None:
    """Table ``name`` as written by :func:`write_table`, or None when this run did not write it."""
    path = table_path(out_dir, name)
    return pd.read_csv(path) if path.exists() else None


def write_records(df: pd.DataFrame, out_dir: str | os.PathLike, name: str) -> Path:
    """Per-prompt records as ``<out_dir>/tables/<name>.parquet`` (written atomically): too many
    lines for a Markdown copy; ``pandas.read_parquet`` reads them."""
    path = Path(out_dir) / "tables" / f"{name}.parquet"
    save_parquet(df, path)
    return path


def read_records(out_dir: str | os.PathLike, name: str) -> pd.DataFrame | None:
    """Records written by :func:`write_records`, or None when this run did not write them."""
    path = Path(out_dir) / "tables" / f"{name}.parquet"
    return load_parquet(path, "run `make reproduce` again to rewrite it") if path.exists() else None


def to_markdown(df: pd.DataFrame, floatfmt: str = ".3f") -> str:
    def cell(v):
        if isinstance(v, float):
            return "" if v != v else format(v, floatfmt)
        return str(v)

    head = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, rule, *body])


def mean_sd(df: pd.DataFrame, by, columns) -> pd.DataFrame:
    """Mean, standard deviation and count of ``columns`` per group of ``by`` (groups in the
    order they first appear): columns ``<c>``, ``<c>_sd`` and ``n``."""
    by = [by] if isinstance(by, str) else list(by)
    g = df.groupby(by, sort=False)
    out = g[list(columns)].mean()
    for c in columns:
        out[f"{c}_sd"] = g[c].std(ddof=1)
    out["n"] = g.size()
    return out.reset_index()


def save_figure(fig, out_dir: str | os.PathLike, name: str) -> Path:
    """``fig`` as ``<out_dir>/<name>.png`` and ``.pdf``; returns the PNG's path. The PDF carries no
    creation date, so a rebuild from the same numbers writes the same bytes (committed figures do
    not change when nothing did)."""
    path = Path(out_dir) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path.with_suffix(".png"), dpi=130)
    fig.savefig(path.with_suffix(".pdf"), metadata={"CreationDate": None})
    return path.with_suffix(".png")
