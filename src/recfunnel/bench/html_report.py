"""A self-contained HTML page of benchmark rows that a person reads at a glance: is a difference real,
and what does each model recommend (``recfunnel report``).

Per table (one per suite, dataset, protocol, split and part, each stated above it):

* a model x metric table: mean, 95% confidence interval and a mark against the baseline. The
  interval comes from the seeds where a model ran with two or more (Student t over the seed
  means), else from the users (percentile bootstrap of the per-user vector, 2,000 resamples,
  seed 0) where the row kept one, else none is shown. The mark is Wilcoxon's signed-rank test
  on the same users (per-user vectors, averaged over seeds), Holm-corrected over the models of
  the table: ``▲`` higher / ``▼`` lower than the baseline at adjusted p < 0.05 (``**`` < 0.01,
  ``***`` < 0.001);
* the paired comparisons themselves (mean difference, Cohen's d_z, t-test and Wilcoxon p, Holm);
* charts: a bar chart per accuracy metric with its intervals as error bars, accuracy against
  training time, recall@K against K, accuracy against the guardrails (coverage, popularity
  percentile) where the rows have them.

Charts are drawn with matplotlib (Agg, no pyplot state) and embedded as base64 PNG; the page
loads nothing from anywhere. Every chart must have a title and axis labels (checked on the
figure before it is saved) and its ``<img>`` carries an alt text naming it.
:func:`check_in_browser` opens the page in headless Chromium, marks every image that failed to
decode and takes a screenshot.
"""

from __future__ import annotations

import base64
import html
import io
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np

from recfunnel.atomic import atomic_write_bytes, atomic_write_text
from recfunnel.eval.guardrails import GUARDRAILS
from recfunnel.eval.stats import (
    PairedTest,
    bootstrap_ci,
    holm,
    paired_test,
    t_interval,
    t_interval_of,
    unpack_vector,
)

__all__ = [
    "BrowserCheck",
    "Chart",
    "Report",
    "build_report",
    "check_in_browser",
    "find_chromium",
    "figure_label_problems",
    "write_report",
]

#: accuracy columns in the order they are preferred (up to MAX_ACCURACY shown per table)
ACCURACY = (
    "ndcg@10",
    "recall@10",
    "recall@20",
    "ndcg@20",
    "recall@50",
    "recall@100",
    "hr@10",
    "mrr@10",
    "auc",
    "gauc",
    "logloss",
)
MAX_ACCURACY = 3
ALPHA = 0.05
N_BOOT = 2000
_GUARDRAIL_TEXT = {
    "coverage": "catalogue coverage",
    "gini": "Gini of item exposure",
    "diversity": "intra-list diversity",
    "novelty": "novelty (bits)",
    "pop_pct": "popularity percentile",
    "long_tail": "long-tail share",
}


# --------------------------------------------------------------------------------------------------
# what the rows say, model by model


@dataclass
class ModelLine:
    """One model of a table: mean metrics over its seeds, intervals and per-user vectors."""

    model: str
    n_seeds: int
    mean: dict[str, float]
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    ci_from: dict[str, str] = field(default_factory=dict)  # metric -> "seeds" or "users"
    per_user: dict[str, np.ndarray] = field(default_factory=dict)
    users_key: str | None = None
    train_seconds: float | None = None


@dataclass
class Table:
    """The rows of one (suite, dataset, protocol, split, part)."""

    suite: str
    dataset: str
    protocol: str
    split: str
    part: str
    rows: list[dict]
    lines: list[ModelLine]
    accuracy: list[str]
    guardrails: list[str]
    baseline: str | None
    tests: dict[str, dict[str, tuple[PairedTest, float]]] = field(default_factory=dict)  # metric -> model

    @property
    def title(self) -> str:
        return f"{self.suite} · {self.dataset} · {self.protocol}"


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)


def _model_line(model: str, rows: list[dict]) -> ModelLine:
    seed_rows = [r for r in rows if not r.get("aggregate")]
    agg = next((r for r in rows if r.get("aggregate")), None)
    line: ModelLine
    if seed_rows:
        keys = list(
            dict.fromkeys(k for r in seed_rows for k, v in (r.get("metrics") or {}).items() if _is_num(v))
        )
        values = {
            k: [r["metrics"][k] for r in seed_rows if _is_num((r.get("metrics") or {}).get(k))] for k in keys
        }
        line = ModelLine(model, len(seed_rows), {k: float(np.mean(v)) for k, v in values.items()})
        for k, v in values.items():
            if len(v) >= 2:
                line.ci[k], line.ci_from[k] = t_interval(v), "seeds"
        times = [r["train_seconds"] for r in seed_rows if _is_num(r.get("train_seconds"))]
        line.train_seconds = float(np.mean(times)) if times else None
        keyed = [r for r in seed_rows if r.get("per_user")]
        if keyed and len(keyed) == len(seed_rows) and len({r.get("per_user_users") for r in keyed}) == 1:
            line.users_key = keyed[0].get("per_user_users")
            for k in keyed[0]["per_user"]:
                vectors = [unpack_vector(r["per_user"][k]) for r in keyed if k in r["per_user"]]
                if len(vectors) == len(keyed) and len({len(v) for v in vectors}) == 1:
                    line.per_user[k] = np.mean(vectors, axis=0)
    else:  # only the aggregate row of an older file: mean and std over its seeds
        seeds = len(agg.get("seeds") or [])
        line = ModelLine(
            model, seeds, {k: float(v) for k, v in (agg.get("metrics") or {}).items() if _is_num(v)}
        )
        for k, sd in (agg.get("metrics_std") or {}).items():
            if _is_num(sd) and k in line.mean and seeds >= 2:
                line.ci[k], line.ci_from[k] = t_interval_of(line.mean[k], sd, seeds), "seeds"
        line.train_seconds = agg.get("train_seconds") if _is_num(agg.get("train_seconds")) else None
    for k, v in line.per_user.items():
        if k not in line.ci and line.n_seeds <= 1 and len(v) > 1:
            line.ci[k], line.ci_from[k] = bootstrap_ci(v, n_boot=N_BOOT, seed=0), "users"
    return line


def _columns(lines: list[ModelLine]) -> tuple[list[str], list[str]]:
    present = list(dict.fromkeys(k for ln in lines for k in ln.mean))
    accuracy = [k for k in ACCURACY if k in present][:MAX_ACCURACY]
    guard = [k for g in GUARDRAILS for k in present if k.split("@")[0] == g]
    if not accuracy:
        accuracy = [k for k in present if k not in guard][:MAX_ACCURACY]
    return accuracy, guard


def _paired(table: Table) -> None:
    base = next((ln for ln in table.lines if ln.model == table.baseline), None)
    if base is None:
        return
    for metric in base.per_user:
        tested: dict[str, PairedTest] = {}
        for ln in table.lines:
            if ln is base or metric not in ln.per_user:
                continue
            same_users = (ln.users_key == base.users_key) if ln.users_key and base.users_key else True
            if same_users and len(ln.per_user[metric]) == len(base.per_user[metric]):
                tested[ln.model] = paired_test(ln.per_user[metric], base.per_user[metric])
        if tested:
            adjusted = holm([t.wilcoxon_p for t in tested.values()])
            table.tests[metric] = {
                m: (t, float(a)) for (m, t), a in zip(tested.items(), adjusted, strict=True)
            }


def tables_of(rows: Sequence[dict], baseline: str | None = None) -> list[Table]:
    """Rows grouped into tables, each model's figures, and the paired tests against `baseline`
    (default: the first model of each table)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r.get("model") is None or not isinstance(r.get("metrics"), dict):
            continue
        key = tuple(str(r.get(k) or "–") for k in ("suite", "dataset", "protocol", "split", "part"))
        groups.setdefault(key, []).append(r)
    out = []
    for (suite, dataset, protocol, split, part), rs in groups.items():
        models = list(dict.fromkeys(str(r["model"]) for r in rs))
        lines = [_model_line(m, [r for r in rs if str(r["model"]) == m]) for m in models]
        accuracy, guard = _columns(lines)
        base = baseline if baseline is not None else models[0]
        table = Table(suite, dataset, protocol, split, part, rs, lines, accuracy, guard, base)
        _paired(table)
        out.append(table)
    return out


# --------------------------------------------------------------------------------------------------
# charts


@dataclass(frozen=True)
class Chart:
    """One embedded chart: its file stem, title, alt text, PNG bytes and, per axes, (title, x
    label, y label) as read from the figure before it was saved."""

    name: str
    title: str
    alt: str
    png: bytes
    labels: tuple[tuple[str, str, str], ...]
    wide: bool = False  # spans the page's two chart columns


def figure_label_problems(fig: Any) -> list[str]:
    """What a figure lacks: every axes with data needs a title (or the figure a suptitle) and both
    axis labels. Empty when nothing is missing."""
    problems = []
    suptitle = fig._suptitle.get_text() if getattr(fig, "_suptitle", None) is not None else ""
    axes = [ax for ax in fig.get_axes() if ax.get_visible() and ax.has_data()]
    if not axes:
        problems.append("the figure has no axes with data")
    for i, ax in enumerate(axes):
        if not (ax.get_title() or suptitle):
            problems.append(f"axes {i} has no title")
        if not ax.get_xlabel():
            problems.append(f"axes {i} ({ax.get_title()!r}) has no x label")
        if not ax.get_ylabel():
            problems.append(f"axes {i} ({ax.get_title()!r}) has no y label")
    return problems


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


class _Charts:
    """Draws the charts of the tables, with unique names and one colour per model."""

    def __init__(self) -> None:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib.figure import Figure

        self.Figure = Figure
        self.charts: list[Chart] = []
        self.colours = matplotlib.colormaps["tab10"].colors

    def colour(self, i: int) -> Any:
        return self.colours[i % len(self.colours)]

    def save(self, fig: Any, name: str, title: str, alt: str, wide: bool = False) -> Chart:
        problems = figure_label_problems(fig)
        if problems:
            raise ValueError(f"chart {name!r}: " + "; ".join(problems))
        labels = tuple(
            (ax.get_title(), ax.get_xlabel(), ax.get_ylabel()) for ax in fig.get_axes() if ax.has_data()
        )
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
        taken = {c.name for c in self.charts}
        unique, n = _slug(name), 2
        while unique in taken:
            unique, n = f"{_slug(name)}-{n}", n + 1
        chart = Chart(unique, title, alt, buf.getvalue(), labels, wide)
        self.charts.append(chart)
        return chart

    def bars(self, t: Table, metric: str) -> Chart | None:
        lines = [ln for ln in t.lines if metric in ln.mean]
        if not lines:
            return None
        fig = self.Figure(figsize=(5.6, 3.6))
        ax = fig.add_subplot()
        x = np.arange(len(lines))
        means = np.array([ln.mean[metric] for ln in lines])
        lo = np.array([ln.ci.get(metric, (m, m))[0] for ln, m in zip(lines, means, strict=True)])
        hi = np.array([ln.ci.get(metric, (m, m))[1] for ln, m in zip(lines, means, strict=True)])
        ax.bar(x, means, color=[self.colour(t.lines.index(ln)) for ln in lines])
        has = np.array([metric in ln.ci for ln in lines])
        if has.any():
            ax.errorbar(
                x[has],
                means[has],
                yerr=[(means - lo)[has], (hi - means)[has]],
                fmt="none",
                ecolor="black",
                capsize=4,
                lw=1,
            )
        ax.set_xticks(x, [ln.model for ln in lines], rotation=30, ha="right", fontsize=8)
        ax.set_xlabel("model")
        ax.set_ylabel(f"{metric} (mean" + (", 95% CI)" if has.any() else ")"))
        title = f"{metric} by model"
        ax.set_title(f"{title}\n{t.dataset}, {t.protocol}, {t.part}", fontsize=10)
        ax.grid(True, axis="y", alpha=0.3)
        return self.save(
            fig,
            f"{t.suite}-{t.protocol}-{t.part}-{metric}-bars",
            title,
            f"Bar chart: {metric} by model ({t.title})",
        )

    def accuracy_vs_time(self, t: Table, metric: str) -> Chart | None:
        lines = [ln for ln in t.lines if metric in ln.mean and ln.train_seconds]
        if not lines:
            return None
        fig = self.Figure(figsize=(5.6, 3.6))
        ax = fig.add_subplot()
        for ln in lines:
            y = ln.mean[metric]
            lo, hi = ln.ci.get(metric, (y, y))
            err = [[y - lo], [hi - y]] if metric in ln.ci else None
            ax.errorbar(
                [ln.train_seconds], [y], yerr=err, fmt="o", capsize=3, color=self.colour(t.lines.index(ln))
            )
            ax.annotate(
                ln.model, (ln.train_seconds, y), fontsize=7, xytext=(4, 3), textcoords="offset points"
            )
        secs = [ln.train_seconds for ln in lines]
        if max(secs) / max(min(secs), 1e-9) > 20:
            ax.set_xscale("log")
        ax.set_xlabel(
            "training seconds (mean over seeds" + (", log scale)" if ax.get_xscale() == "log" else ")")
        )
        ax.set_ylabel(f"{metric} (mean" + (", 95% CI)" if any(metric in ln.ci for ln in lines) else ")"))
        title = f"{metric} vs training time"
        ax.set_title(f"{title}\n{t.dataset}, {t.protocol}, {t.part}", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        return self.save(
            fig,
            f"{t.suite}-{t.protocol}-{t.part}-{metric}-vs-time",
            title,
            f"Scatter: {metric} against training seconds per model ({t.title})",
        )

    def recall_curves(self, t: Table) -> Chart | None:
        ks = sorted(
            {int(k.split("@")[1]) for ln in t.lines for k in ln.mean if re.fullmatch(r"recall@\d+", k)}
        )
        if len(ks) < 2:
            return None
        fig = self.Figure(figsize=(5.6, 3.6))
        ax = fig.add_subplot()
        for i, ln in enumerate(t.lines):
            pts = [
                (k, ln.mean[f"recall@{k}"], ln.ci.get(f"recall@{k}")) for k in ks if f"recall@{k}" in ln.mean
            ]
            if not pts:
                continue
            xs, ys = [p[0] for p in pts], np.array([p[1] for p in pts])
            lo = np.array([p[2][0] if p[2] else p[1] for p in pts])
            hi = np.array([p[2][1] if p[2] else p[1] for p in pts])
            ax.errorbar(
                xs,
                ys,
                yerr=[ys - lo, hi - ys],
                marker="o",
                ms=3,
                capsize=2,
                color=self.colour(i),
                label=ln.model,
            )
        ax.set_xscale("log")
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.minorticks_off()
        ax.set_xlabel("K (cut-off, log scale)")
        ax.set_ylabel("recall@K (mean)")
        title = "recall@K curves"
        ax.set_title(f"{title}\n{t.dataset}, {t.protocol}, {t.part}", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        return self.save(
            fig,
            f"{t.suite}-{t.protocol}-{t.part}-recall-curves",
            title,
            f"Line chart: recall@K against K per model ({t.title})",
        )

    def accuracy_vs_guardrails(self, t: Table, metric: str) -> Chart | None:
        wanted = [g for g in t.guardrails if g.split("@")[0] in ("coverage", "pop_pct")]
        if not wanted:
            return None
        fig = self.Figure(figsize=(5.6 * len(wanted), 3.8), layout="constrained")
        for j, g in enumerate(wanted):
            ax = fig.add_subplot(1, len(wanted), j + 1)
            for i, ln in enumerate(t.lines):
                if metric not in ln.mean or g not in ln.mean:
                    continue
                y, x = ln.mean[metric], ln.mean[g]
                lo, hi = ln.ci.get(metric, (y, y))
                err = [[y - lo], [hi - y]] if metric in ln.ci else None
                ax.errorbar([x], [y], yerr=err, fmt="o", capsize=3, color=self.colour(i))
                ax.annotate(ln.model, (x, y), fontsize=7, xytext=(4, 3), textcoords="offset points")
            name, k = g.split("@")
            ax.set_xlabel(
                f"{_GUARDRAIL_TEXT.get(name, name)}@{k}" + (" (0-100)" if name == "pop_pct" else "")
            )
            ax.set_ylabel(f"{metric} (mean)")
            ax.set_title(f"{metric} vs {_GUARDRAIL_TEXT.get(name, name)}", fontsize=10)
            ax.grid(True, alpha=0.3)
        title = f"{metric} vs guardrails"
        fig.suptitle(f"{title} ({t.dataset}, {t.protocol}, {t.part})", fontsize=10)
        return self.save(
            fig,
            f"{t.suite}-{t.protocol}-{t.part}-{metric}-vs-guardrails",
            title,
            f"Scatter: {metric} against " + " and ".join(wanted) + f" per model ({t.title})",
            wide=len(wanted) > 1,
        )


# --------------------------------------------------------------------------------------------------
# the page

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:24px auto;max-width:1240px;
color:#1d2330;padding:0 16px;line-height:1.4}
h1{font-size:24px;margin:0 0 4px}
h2{font-size:19px;margin:28px 0 6px;border-top:2px solid #d0d5dd;padding-top:14px}
h3{font-size:15px;margin:16px 0 4px}p{margin:4px 0}.meta{color:#596273;font-size:13px}
.context{background:#f3f5f8;border-left:4px solid #4c78a8;padding:6px 10px;font-size:13px;margin:8px 0}
.quick{background:#fff4e0;border-left:4px solid #e8a33d;padding:6px 10px;font-size:13px}
table{border-collapse:collapse;font-size:12.5px;margin:6px 0}
th,td{padding:4px 7px;border-bottom:1px solid #e3e6eb}
th{background:#eef1f5;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}td{text-align:right;white-space:nowrap}
tr.baseline td{background:#f7f7f2}.ci{color:#6b7280;font-size:11px}.up{color:#1a7f37;font-weight:600}
.down{color:#c0392b;font-weight:600}.wide{overflow-x:auto}.note{color:#596273;font-size:12px;max-width:1100px}
.charts{display:grid;grid-template-columns:repeat(2,minmax(0,1fr));gap:14px;margin-top:10px}
figure{margin:0;border:1px solid #e3e6eb;padding:6px;background:#fff}figure.wide{grid-column:1/-1}
figure img{max-width:100%;height:auto;display:block}
figcaption{font-size:12px;color:#596273;margin-top:4px}
"""

_PROTOCOLS = {
    "full": "full ranking: each held-out item is ranked against every item; the user's training (and, "
    "for test, validation) items are masked",
    "full-unmasked": "full ranking over every item, seen items included (session data)",
    "pointwise": "pointwise: AUC / logloss / GAUC on labelled rows",
}


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _num(v: Any) -> str:
    if not _is_num(v):
        return "–"
    a = abs(v)
    if a >= 1000 or (a >= 10 and float(v).is_integer()):
        return f"{v:,.0f}"
    return f"{v:.1f}" if a >= 10 else f"{v:.4f}"


def _secs(v: Any) -> str:
    return "–" if not _is_num(v) else f"{v:.2f}" if v < 10 else f"{v:,.1f}" if v < 1000 else f"{v:,.0f}"


def _protocol_text(p: str) -> str:
    if p.startswith("sampled-"):
        return f"sampled: each held-out item is ranked against {p.split('-', 1)[1]} fixed negatives"
    return _PROTOCOLS.get(p, p)


def _mark(test: tuple[PairedTest, float] | None) -> str:
    if test is None:
        return ""
    t, p = test
    if not p < ALPHA:
        return ' <span class="ci" title="not significant after Holm">n.s.</span>'
    stars = "***" if p < 0.001 else "**" if p < 0.01 else "*"
    up = t.mean_diff > 0
    return (
        f' <span class="{"up" if up else "down"}" title="Holm-adjusted Wilcoxon p = {p:.2g}">'
        f"{'▲' if up else '▼'}{stars}</span>"
    )


def _context(t: Table) -> str:
    d = next((r.get("data") for r in t.rows if isinstance(r.get("data"), dict)), None)
    users = next((r.get("n_eval_users") for r in t.rows if _is_num(r.get("n_eval_users"))), None)
    size = ""
    if d:
        size = f" ({_num(d.get('n_users'))} users, {_num(d.get('n_items'))} items, "
        size += f"{_num(d.get('n_interactions'))} interactions)"
    seeds = ", ".join(str(s) for s in sorted({r.get("seed") for r in t.rows if r.get("seed") is not None}))
    return (
        f'<p class="context"><b>Protocol</b>: {_e(t.protocol)}: {_e(_protocol_text(t.protocol))}.<br>'
        f"<b>Split</b>: {_e(t.split)}; evaluated on the <b>{_e(t.part)}</b> part"
        + (f" ({_num(users)} users)" if users is not None else "")
        + f". <b>Dataset</b>: {_e(t.dataset)}{_e(size)}. <b>Seeds</b>: {_e(seeds or '–')}.</p>"
    )


def _table_html(t: Table) -> str:
    cols = t.accuracy + t.guardrails
    head = "".join(f"<th>{_e(c)}</th>" for c in cols)
    out = [f'<div class="wide"><table><thead><tr><th>model</th>{head}<th>train s</th></tr></thead><tbody>']
    for ln in t.lines:
        is_base = ln.model == t.baseline
        cells = []
        for c in cols:
            cell = _num(ln.mean.get(c))
            if not is_base:
                cell += _mark(t.tests.get(c, {}).get(ln.model))
            if c in ln.ci:
                lo, hi = ln.ci[c]
                why = f"95% CI from the {ln.ci_from[c]}"
                cell += f'<br><span class="ci" title="{_e(why)}">[{_num(lo)}, {_num(hi)}]</span>'
            cells.append(f"<td>{cell}</td>")
        name = _e(ln.model) + (" <i>(baseline)</i>" if is_base else "")
        if ln.n_seeds > 1:
            name += f'<br><span class="ci">{ln.n_seeds} seeds</span>'
        out.append(
            f"<tr{' class=baseline' if is_base else ''}><td>{name}</td>{''.join(cells)}"
            f"<td>{_secs(ln.train_seconds)}</td></tr>"
        )
    out.append("</tbody></table></div>")
    return "".join(out)


def _tests_html(t: Table) -> str:
    if not t.tests:
        return ""
    out = [
        f"<h3>Paired comparison with {_e(t.baseline)} (same users)</h3>",
        _context(t),
        "<table><thead><tr><th>model</th><th>metric</th><th>mean</th><th>baseline</th><th>difference</th>"
        "<th>Cohen's d_z</th><th>t-test p</th><th>Wilcoxon p</th><th>Holm p</th><th>users</th></tr></thead>"
        "<tbody>",
    ]
    for metric, tests in t.tests.items():
        for model, (r, adj) in tests.items():
            out.append(
                f"<tr><td>{_e(model)}</td><td>{_e(metric)}</td><td>{_num(r.mean_a)}</td><td>{_num(r.mean_b)}</td>"
                f"<td>{r.mean_diff:+.4f}</td><td>{r.d_z:+.3f}</td><td>{r.t_p:.3g}</td><td>{r.wilcoxon_p:.3g}</td>"
                f"<td>{adj:.3g}{_mark((r, adj))}</td><td>{r.n:,}</td></tr>"
            )
    out.append("</tbody></table>")
    return "".join(out)


def _img(chart: Chart) -> str:
    data = base64.b64encode(chart.png).decode("ascii")
    return (
        f"<figure{' class=wide' if chart.wide else ''}>"
        f'<img src="data:image/png;base64,{data}" alt="{_e(chart.alt)}" title="{_e(chart.title)}">'
        f"<figcaption>{_e(chart.alt)}</figcaption></figure>"
    )


def _notes(t: Table) -> str:
    ci = sorted({src for ln in t.lines for src in ln.ci_from.values()})
    parts = []
    if "seeds" in ci:
        parts.append("[lo, hi]: 95% Student-t interval over the seeds of a model")
    if "users" in ci:
        parts.append(f"[lo, hi]: 95% percentile bootstrap over the users ({N_BOOT:,} resamples, seed 0)")
    if not ci:
        parts.append("no interval: the rows have one seed and no per-user vectors")
    if t.tests:
        parts.append(
            f"▲/▼: higher/lower than {t.baseline} on the same users, Wilcoxon signed-rank p after Holm's "
            f"correction over the {max(len(v) for v in t.tests.values())} models of the table < 0.05 "
            "(** < 0.01, *** < 0.001); n.s.: not significant"
        )
    elif t.baseline not in {ln.model for ln in t.lines}:
        parts.append(f"no significance marks: the baseline {t.baseline} is not in this table")
    else:
        parts.append("no significance marks: the rows keep no per-user vectors for a paired test")
    if t.guardrails:
        parts.append(
            "guardrails (top-K lists): coverage, Gini of exposure, intra-list diversity, novelty in bits, "
            "popularity percentile (0 least, 100 most popular) and long-tail share (items outside the top "
            "20% by training popularity)"
        )
    return '<p class="note">' + _e("; ".join(parts)) + ".</p>"


@dataclass(frozen=True)
class Report:
    """The page and its charts."""

    html: str
    charts: tuple[Chart, ...]
    tables: tuple[Table, ...]


def build_report(
    rows: Sequence[dict],
    *,
    baseline: str | None = None,
    sources: Iterable[str] = (),
    command: str = "",
    title: str = "Benchmark report",
) -> Report:
    """The HTML page of `rows` (bench JSON rows) with a table and charts per (suite, dataset,
    protocol, split, part); `baseline`: the model every other is tested against (default: each
    table's first model); `sources` and `command` are printed at the top."""
    tables = tables_of(rows, baseline)
    if not tables:
        raise ValueError("no rows with a model and metrics to report")
    charts = _Charts()
    body: list[str] = []
    for t in tables:
        body.append(f"<section><h2>{_e(t.title)}</h2>")
        if any(r.get("quick") for r in t.rows):
            body.append('<p class="quick">Quick run (CI-sized): not comparable with full results.</p>')
        body += [_context(t), _table_html(t), _notes(t), _tests_html(t)]
        drawn: list[Chart | None] = []
        if t.accuracy:  # the headline metric's charts first, the other metrics' bars after them
            headline = t.accuracy[0]
            drawn += [charts.bars(t, headline), charts.accuracy_vs_time(t, headline)]
            drawn += [charts.accuracy_vs_guardrails(t, headline), charts.recall_curves(t)]
            drawn += [charts.bars(t, m) for m in t.accuracy[1:]]
        figs = [c for c in drawn if c is not None]
        if figs:
            body.append('<div class="charts">' + "".join(_img(c) for c in figs) + "</div>")
        body.append("</section>")
    dates = sorted(str(r["date"]) for r in rows if r.get("date"))
    meta = []
    if sources:
        meta.append("From " + ", ".join(_e(s) for s in sources))
    if command:
        meta.append(f"rendered by <code>{_e(command)}</code>")
    if dates:
        meta.append(f"rows dated {_e(dates[0])}" + (f" to {_e(dates[-1])}" if dates[-1] != dates[0] else ""))
    page = (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<style>{_CSS}</style></head><body>"
        f'<h1>{_e(title)}</h1><p class="meta">{"; ".join(meta)}.</p>' + "\n".join(body) + "\n</body></html>\n"
    )
    return Report(page, tuple(charts.charts), tuple(tables))


def write_report(
    report: Report, out: str | os.PathLike[str], png_dir: str | os.PathLike[str] | None = None
) -> list[Path]:
    """Write the page to `out` and, with `png_dir`, every chart as ``<name>.png`` there; the paths
    written (page first)."""
    out = Path(out)
    atomic_write_text(out, report.html)
    written = [out]
    if png_dir is not None:
        folder = Path(png_dir)
        folder.mkdir(parents=True, exist_ok=True)
        for c in report.charts:
            atomic_write_bytes(folder / f"{c.name}.png", c.png)
            written.append(folder / f"{c.name}.png")
    return written


# --------------------------------------------------------------------------------------------------
# the browser check

#: marks every image that did not decode; runs on load, before the DOM is dumped
_MARKER = (
    "<script>window.addEventListener('load',function(){for(var i of document.images){"
    "i.setAttribute('data-natural-width',String(i.naturalWidth));"
    "if(!(i.complete&&i.naturalWidth>0))i.setAttribute('data-broken','1');}"
    "document.body.setAttribute('data-checked','1');});</script>"
)


def find_chromium() -> str | None:
    """The path of a Chromium executable on PATH (Debian's ``chromium``), or None."""
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass(frozen=True)
class BrowserCheck:
    """What headless Chromium saw: every image's alt text and whether it decoded, the screenshot."""

    images: tuple[tuple[str, bool], ...]  # (alt, decoded)
    screenshot: Path | None
    browser: str

    @property
    def broken(self) -> list[str]:
        return [alt or "(no alt text)" for alt, ok in self.images if not ok]

    @property
    def missing_alt(self) -> int:
        return sum(1 for alt, _ in self.images if not alt.strip())

    @property
    def ok(self) -> bool:
        return bool(self.images) and not self.broken and not self.missing_alt


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[tuple[str, bool]] = []
        self.checked = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "body" and a.get("data-checked") == "1":
            self.checked = True
        if tag == "img":
            self.images.append(
                (
                    a.get("alt") or "",
                    a.get("data-broken") is None and a.get("data-natural-width") not in (None, "0"),
                )
            )


def _run(cmd: list[str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def check_in_browser(
    page: str | os.PathLike[str],
    screenshot: str | os.PathLike[str] | None = None,
    *,
    chromium: str | None = None,
    window: tuple[int, int] = (1280, 2000),
    timeout: float = 120.0,
) -> BrowserCheck:
    """Open `page` in headless Chromium: dump its DOM after a marker script has flagged every
    ``<img>`` whose ``naturalWidth`` is 0 (not decoded), and, with `screenshot`, save a PNG of the
    first `window` pixels. Raises FileNotFoundError without a Chromium, RuntimeError when
    Chromium fails or the screenshot is blank."""
    exe = chromium or find_chromium()
    if exe is None:
        raise FileNotFoundError("no Chromium on PATH (Debian: apt-get install chromium)")
    page = Path(page).resolve()
    with tempfile.TemporaryDirectory(prefix="recfunnel-report-") as tmp:
        marked = Path(tmp) / "checked.html"
        marked.write_text(page.read_text("utf-8").replace("</body>", _MARKER + "</body>", 1), "utf-8")
        common = [
            exe,
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--no-first-run",
            "--hide-scrollbars",
            f"--user-data-dir={tmp}/profile",
            "--disable-dev-shm-usage",
        ]
        dump = _run([*common, "--virtual-time-budget=10000", "--dump-dom", marked.as_uri()], timeout)
        parser = _Images()
        parser.feed(dump.stdout)
        if dump.returncode != 0 or not parser.checked:
            raise RuntimeError(
                f"{exe} did not render {page} (exit {dump.returncode}): "
                + (dump.stderr.strip()[-500:] or "no output")
            )
        shot = None
        if screenshot is not None:
            shot = Path(screenshot).resolve()
            shot.parent.mkdir(parents=True, exist_ok=True)
            raw = Path(tmp) / "shot.png"
            _run(
                [*common, f"--screenshot={raw}", f"--window-size={window[0]},{window[1]}", page.as_uri()],
                timeout,
            )
            if not raw.is_file() or raw.stat().st_size == 0:
                raise RuntimeError(f"{exe} wrote no screenshot of {page}")
            if _blank(raw):
                raise RuntimeError(f"the screenshot of {page} is one flat colour: the page did not render")
            atomic_write_bytes(shot, raw.read_bytes())
    return BrowserCheck(tuple(parser.images), shot, Path(exe).name)


def _blank(png: Path) -> bool:
    import matplotlib.image

    pixels = matplotlib.image.imread(str(png))
    return float(np.ptp(pixels)) == 0.0
