"""Figures for BENCHMARKS.md, drawn from the same JSON rows as the tables (matplotlib, Agg backend).

* ``ann-<dataset>.png``: recall@10 against queries per second (1 thread, log scale) for each
  backend's sweep of its search parameter, exact search as the reference point, one file per
  vector set: the trade-off an index is chosen on.
* ``<suite>-curves.png`` (sequence / retrieval suites): the validation metric per epoch of each
  trained model against cumulative training seconds: how fast each model gets where it stops.

``render_plots(rows, folder)`` writes them and returns their paths; ``recfunnel bench-report
--plots FOLDER`` calls it and links the images from the markdown.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from recfunnel.atomic import atomic_write_bytes

__all__ = ["render_plots"]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


def _save(fig, path: Path) -> Path:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
    return path


def _ann_plots(rows: list[dict], folder: Path, plt) -> list[Path]:
    out = []
    for dataset in dict.fromkeys(r.get("dataset") for r in rows):
        rs = [r for r in rows if r.get("dataset") == dataset]
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for backend in dict.fromkeys(r["backend"] for r in rs):
            br = [r for r in rs if r["backend"] == backend]
            qps = [r["metrics"]["qps_1t"] for r in br]
            rec = [r["metrics"]["recall@10"] for r in br]
            marker = "*" if backend == "exact" else "o"
            ax.plot(qps, rec, marker=marker, ms=9 if backend == "exact" else 5, label=backend)
            for r, x, y in zip(br, qps, rec, strict=True):
                if r.get("search_param"):
                    ax.annotate(
                        str(next(iter(r["search_param"].values()))),
                        (x, y),
                        fontsize=7,
                        xytext=(3, -9),
                        textcoords="offset points",
                    )
                if r.get("default"):
                    ax.plot([x], [y], marker="o", ms=11, mfc="none", mec="black")
        ax.set_xscale("log")
        ax.set_xlabel("queries per second, 1 thread (log)")
        ax.set_ylabel("recall@10 vs exact")
        n = rs[0].get("n_items")
        ax.set_title(f"{dataset} ({n:,} vectors): recall vs speed" if isinstance(n, int) else str(dataset))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, title="circled: default", title_fontsize=7)
        out.append(_save(fig, folder / f"ann-{_slug(str(dataset))}.png"))
        plt.close(fig)
    return out


def _curve_plot(suite: str, rows: list[dict], folder: Path, plt) -> list[Path]:
    trained = [r for r in rows if r.get("valid_history")]
    seen: dict[str, dict] = {}
    for r in trained:  # one curve per model (its rows per protocol share the history)
        seen.setdefault(str(r["model"]), r)
    if not seen:
        return []
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    metric = None
    # x: cumulative training seconds where every history records them, else the epoch
    timed = all(h.get("train_seconds") for r in seen.values() for h in r["valid_history"])
    for label, r in seen.items():
        hist = r["valid_history"]
        keys = [k for k in hist[0] if k.startswith("valid_ndcg@")] or [
            k for k in hist[0] if k.startswith("valid_")
        ]
        if not keys:
            continue
        metric = keys[0]
        t, xs, ys = 0.0, [], []
        for h in hist:
            t += float(h.get("train_seconds") or 0.0)
            xs.append(t if timed else h["epoch"] + 1)
            ys.append(h[metric])
        ax.plot(xs, ys, marker=".", ms=3, label=label)
    if metric is None:
        plt.close(fig)
        return []
    if timed:
        ax.set_xscale("log")
    ax.set_xlabel("cumulative training seconds (log)" if timed else "epoch (seed 0 where there are several)")
    config = next(iter(seen.values())).get("config", {})
    # rows keep the run's config (eval.valid_protocol); older seq rows had it at the top
    protocol = config.get("eval", {}).get("valid_protocol") or config.get("valid_protocol")
    ax.set_ylabel(
        f"{metric.removeprefix('valid_')} on the valid part" + (f" ({protocol})" if protocol else "")
    )
    ax.set_title(f"{suite}: validation curves")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    path = _save(fig, folder / f"{_slug(suite)}-curves.png")
    plt.close(fig)
    return [path]


def render_plots(rows: list[dict], folder: str | os.PathLike[str]) -> dict[str, list[Path]]:
    """Write the figures of every suite in `rows` under `folder`; {suite: [paths]}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, list[Path]] = {}
    for suite in dict.fromkeys(r.get("suite") for r in rows):
        rs = [r for r in rows if r.get("suite") == suite]
        paths = _ann_plots(rs, folder, plt) if suite == "ann" else _curve_plot(str(suite), rs, folder, plt)
        if paths:
            out[str(suite)] = paths
    return out
