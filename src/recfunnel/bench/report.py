"""Markdown report of benchmark rows: every number in it is read from the rows, none typed by hand."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["load_rows", "render_markdown"]

_DASH = "–"


def load_rows(paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> list[dict]:
    """Rows from one or more JSON files written by `write_json` (a list of rows, or {"rows": [...]})."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    rows: list[dict] = []
    for p in paths:
        data = json.loads(Path(p).read_text(encoding="utf-8"))
        if isinstance(data, dict) and "rows" in data:
            data = data["rows"]
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise ValueError(f"{p}: expected a JSON list of benchmark rows")
        rows.extend(data)
    return rows


# --------------------------------------------------------------------------------------------------
# formatting helpers


def _f(x: Any, digits: int = 4) -> str:
    return _DASH if x is None else f"{x:.{digits}f}"


def _int(x: Any) -> str:
    return _DASH if x is None else f"{int(round(x)):,}"


def _secs(x: Any) -> str:
    if x is None:
        return _DASH
    return f"{x:.2f}" if x < 10 else f"{x:.1f}"


def _threads(n: Any, what: str = "") -> str:
    return f"{n} {what}thread{'' if n == 1 else 's'}"


def _uniq(rows: Sequence[dict], key: str) -> list:
    out: list = []
    for r in rows:
        v = r.get(key)
        if v is not None and v not in out:
            out.append(v)
    return out


def _ks(rows: Sequence[dict], metric: str) -> list[int]:
    ks = {int(k.split("@")[1]) for r in rows for k in r.get("metrics", {}) if k.startswith(f"{metric}@")}
    return sorted(ks)


def _protocol_text(protocol: str) -> str:
    if protocol == "full":
        return (
            "**full**: each test user's held-out item is ranked against *all* items; the user's train "
            "and valid items are masked out"
        )
    if protocol.startswith("sampled-"):
        n = protocol.split("-", 1)[1]
        return (
            f"**{protocol}**: each test user's held-out item is ranked against {n} fixed negatives "
            f"(items the user never interacted with, drawn once with the split's seed)"
        )
    return f"**{protocol}**"


def _machine_line(rows: Sequence[dict]) -> str:
    machines = _uniq(rows, "machine")
    if not machines:
        return f"Machine: {_DASH}"
    parts = []
    for m in machines:
        s = (
            f"{m.get('platform', '?')}, {m.get('processor', '?')}, "
            f"{m.get('cpus_usable', m.get('cpu_count', '?'))} CPUs usable "
            f"(of {m.get('cpu_count', '?')}), Python {m.get('python', '?')}, "
            f"torch {m.get('torch', '?')} ({_threads(m.get('torch_threads', '?'))})"
        )
        if m.get("implicit"):
            s += f", implicit {m['implicit']}"
        parts.append(s)
    return "Machine: " + "; ".join(parts)


def _date_line(rows: Sequence[dict]) -> str:
    dates = sorted(r["date"] for r in rows if r.get("date"))
    if not dates:
        return f"Date (UTC): {_DASH}"
    return f"Date (UTC): {dates[0]}" + (f" to {dates[-1]}" if dates[-1] != dates[0] else "")


# --------------------------------------------------------------------------------------------------
# tables and sentences


def _table(rows: Sequence[dict]) -> list[str]:
    hr_ks, ndcg_ks = _ks(rows, "hr"), _ks(rows, "ndcg")
    mrr = any("mrr@10" in r.get("metrics", {}) for r in rows)
    head = ["model", *(f"HR@{k}" for k in hr_ks), *(f"NDCG@{k}" for k in ndcg_ks)]
    if mrr:
        head.append("MRR@10")
    head += ["train s", "epochs (best)", "samples/s", "params", "peak RSS MB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for r in rows:
        m = r.get("metrics", {})
        cells = [r.get("model", "?")]
        cells += [_f(m.get(f"hr@{k}")) for k in hr_ks]
        cells += [_f(m.get(f"ndcg@{k}")) for k in ndcg_ks]
        if mrr:
            cells.append(_f(m.get("mrr@10")))
        ep = r.get("epochs_run")
        best = r.get("best_epoch")
        cells.append(_secs(r.get("train_seconds")))
        cells.append(_DASH if ep is None else f"{ep}" + ("" if best is None else f" ({best + 1})"))
        cells.append(_int(r.get("samples_per_second")))
        cells.append(_int(r.get("params")))
        cells.append(_int(r.get("peak_rss_mb")))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _comparison(rows: Sequence[dict]) -> list[str]:
    out = []
    for r in rows:
        c = r.get("comparison")
        if not c or r.get("protocol") != _prefer_protocol(rows):
            continue
        if "ratio_ours_over_deepctr" in c:
            out.append(_deepctr_sentence(r["model"], c))
            continue
        other = next(
            (
                o
                for o in rows
                if o.get("model") == c.get("against") and o.get("protocol") == r.get("protocol")
            ),
            None,
        )
        ratio = c.get("ratio_ours_over_implicit")
        epochs = c.get("same_epochs")
        epoch_txt = (
            f"the same {epochs} epochs"
            if epochs is not None
            else f"{c.get('ours_epochs')} vs {c.get('implicit_epochs')} epochs"
        )
        s = (
            f"**{r['model']} vs {c.get('against')}** ({epoch_txt}, same train matrix): ours trained in "
            f"{_secs(c.get('ours_train_seconds'))} s of epoch time, implicit in "
            f"{_secs(c.get('implicit_train_seconds'))} s: ratio ours/implicit = "
            f"{_f(ratio, 2) if ratio is not None and ratio < 100 else _int(ratio)}x "
            f"({_threads(c.get('ours_threads', '?'), 'torch ')} vs "
            f"{_threads(c.get('implicit_threads', '?'), 'implicit ')})."
        )
        if other is not None:
            key = "hr@10" if "hr@10" in r.get("metrics", {}) else None
            if key:
                s += (
                    f" {r['protocol']} HR@10 / NDCG@10: ours {_f(r['metrics'].get('hr@10'))} / "
                    f"{_f(r['metrics'].get('ndcg@10'))}, implicit {_f(other['metrics'].get('hr@10'))} / "
                    f"{_f(other['metrics'].get('ndcg@10'))}."
                )
        if c.get("note"):
            s += f" ({c['note']})"
        side = c.get("side_by_side")
        if side and side.get("ratios"):
            s += (
                f" Side by side in one process ({side['rounds']} alternating rounds of {side['epochs']} "
                f"epochs, same threads): median ratio ours/implicit = {_f(side['median_ratio'], 2)}x "
                f"(per round: {', '.join(_f(x, 2) for x in side['ratios'])})."
            )
        out.append(s)
    return out


def _deepctr_sentence(model: str, c: dict) -> str:
    arch = c.get("architecture") or {}
    return (
        f"**{model}**: our DeepFM {_int(c['ours_samples_per_second'])} samples/s vs deepctr-torch's "
        f"{_int(c['deepctr_samples_per_second'])} (median wall time of {c['rounds']} alternating rounds of "
        f"{c['epochs']} epoch(s) on {_int(c['rows'])} rows, batch {c['batch_size']}, {c['threads']} thread; "
        f"embedding {arch.get('embedding_dim')}, tower {arch.get('hidden')}, dropout {arch.get('dropout')}): "
        f"ratio ours/deepctr = {_f(c['ratio_ours_over_deepctr'], 2)}x; test AUC after the last round "
        f"{_f(c['ours_test_auc'])} vs {_f(c['deepctr_test_auc'])}. Per round (s): ours "
        f"{', '.join(_f(x, 2) for x in c['ours_seconds'])}; deepctr "
        f"{', '.join(_f(x, 2) for x in c['deepctr_seconds'])}."
    )


def _prefer_protocol(rows: Sequence[dict]) -> str | None:
    protocols = _uniq(rows, "protocol")
    sampled = [p for p in protocols if str(p).startswith("sampled")]
    return sampled[0] if sampled else (protocols[0] if protocols else None)


def _throughput(rows: Sequence[dict]) -> list[str]:
    out, seen = [], set()
    for r in rows:
        if r.get("family") != "neumf" or r.get("model") in seen:
            continue
        seen.add(r.get("model"))
        sps, share = r.get("samples_per_second"), r.get("pipeline_share")
        if sps is None:
            continue
        s = f"**{r['model']}** training throughput: {_int(sps)} samples/s"
        if share is not None:
            s += f"; {100 * share:.1f}% of epoch time outside forward/backward/step (sampling, batching)"
        if r.get("epoch_seconds") is not None and r.get("epochs_run"):
            s += f"; {_secs(r['epoch_seconds'] / r['epochs_run'])} s per epoch over {r['epochs_run']} epochs"
        if r.get("pretrain_seconds") is not None:
            s += f" (after {_secs(r['pretrain_seconds'])} s of GMF + MLP pre-training)"
        out.append(s + ".")
    return out


def _suite_section(suite: str, rows: list[dict], command: str) -> list[str]:
    lines = [f"## {suite}", ""]
    if any(r.get("quick") for r in rows):
        lines += ["> Quick run (CI-sized: few epochs); not comparable with full results.", ""]
    quick = " --quick" if any(r.get("quick") for r in rows) else ""
    lines.append(_measured_by(suite, quick, rows))
    lines.append(f"Rendered by: `{command}`")
    lines.append("")
    for ds in _uniq(rows, "dataset"):
        d = next((r.get("data") for r in rows if r.get("dataset") == ds and r.get("data")), None)
        s = f"Dataset: {ds}"
        if d:
            s += (
                f" ({_int(d.get('n_users'))} users, {_int(d.get('n_items'))} items, "
                f"{_int(d.get('n_interactions'))} interactions, {_int(d.get('n_train'))} in train)"
            )
        lines.append(s + "  ")
    splits = _uniq(rows, "split")
    seeds = _uniq(rows, "seed")
    lines.append(
        f"Split: {', '.join(map(str, splits)) or _DASH}; evaluated on the "
        f"{', '.join(map(str, _uniq(rows, 'part'))) or 'test'} part; training seed "
        f"{', '.join(map(str, seeds)) or _DASH}  "
    )
    lines.append(_machine_line(rows) + "  ")
    lines.append(_date_line(rows))
    lines.append("")
    protocols = _uniq(rows, "protocol")
    lines.append("Protocols (ties ranked pessimistically: a target tied with a negative ranks below it):")
    lines.append("")
    for p in protocols:
        lines.append(f"- {_protocol_text(p)}")
    scopes = _uniq(rows, "peak_rss_scope")
    lines.append(
        "- train s: the fit's wall time including per-epoch validation (pre-trained NeuMF: including "
        "GMF + MLP pre-training); epochs (best): epochs run and the 1-based epoch kept by early "
        "stopping on the valid part" + (f"; peak RSS: {', '.join(scopes)}" if scopes else "")
    )
    lines.append("")
    for p in protocols:
        lines += [f"### {p}", ""]
        lines += _table([r for r in rows if r.get("protocol") == p])
        lines.append("")
    extra = _comparison(rows) + _throughput(rows)
    for s in extra:
        lines += [s, ""]
    return lines


def render_markdown(rows: list[dict], command: str, plots: dict[str, list[str]] | None = None) -> str:
    """A markdown section per suite: command, dataset, protocols, machine, date, one table per
    protocol, the implicit comparison and NeuMF throughput, all read from `rows`; `plots`: image
    paths per suite (see :mod:`recfunnel.bench.plots`), shown at the end of its section."""
    suites = _uniq(rows, "suite")
    lines: list[str] = []
    for s in suites:
        generic = s in GENERIC_METRICS or s.startswith(("seq-", "session-"))
        section = _generic_section if generic else _suite_section
        lines += section(s, [r for r in rows if r.get("suite") == s], command)
        for path in (plots or {}).get(s, []):
            lines += [f"![{s}: {Path(path).stem}]({path})", ""]
    return "\n".join(lines).rstrip() + "\n"


#: metric columns shown per suite (rows carry more; the JSON has everything)
GENERIC_METRICS = {
    "ctr-ml100k": ("auc", "logloss", "gauc"),
    "ann": ("recall@10", "recall@100", "qps_1t", "qps_2t"),
    "retrieval-ml100k": ("ndcg@10", "recall@20", "recall@50", "recall@100", "hr@10", "hr@50"),
    "funnel-ml100k": ("ndcg@10", "recall@10", "cand_recall@200", "cand_recall"),
    "optim": ("sparse_adam_ms", "dense_adam_ms", "dense_over_sparse"),
    "serve-latency": ("p50_ms", "p95_ms", "p99_ms", "max_ms", "achieved_rps", "errors"),
}
DEFAULT_METRICS = ("hr@10", "ndcg@10", "recall@20", "mrr@20")


def _num(v: object) -> str:
    if not isinstance(v, (int, float)):
        return _DASH
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.4f}"


def _measured_by(suite: str, quick: str, rows: list[dict]) -> str:
    """The commands that wrote the rows (`recfunnel bench` records its command in each row); rows
    without one are attributed to the suite's plain command."""
    recorded = list(dict.fromkeys(str(r["command"]) for r in rows if r.get("command")))
    plain = f"recfunnel bench {suite}{quick} --json bench/results/{suite}.json"
    if not recorded:
        return f"Rows measured by: `{plain}`  "
    if any(not r.get("command") for r in rows):
        recorded.insert(0, plain)  # older rows carry no command: the plain one wrote them
    return "Rows measured by: " + "; then ".join(f"`{c}`" for c in recorded) + "  "


def _date_range(rows: list[dict]) -> str:
    """The first and last row date (rows of one suite may come from runs of some of its models)."""
    dates = sorted(str(r["date"]) for r in rows if r.get("date"))
    if not dates:
        return _DASH
    return dates[0] if dates[0] == dates[-1] else f"{dates[0]} to {dates[-1]}"


def _generic_section(suite: str, rows: list[dict], command: str) -> list[str]:
    """One table per protocol: model, the suite's metric columns (mean +- std over seeds where the
    suite wrote aggregate rows), train seconds, params; every number from the rows."""
    quick = " --quick" if any(r.get("quick") for r in rows) else ""
    lines = [f"## {suite}", ""]
    if quick:
        lines += ["> Quick run (CI-sized); not comparable with full results.", ""]
    lines.append(_measured_by(suite, quick, rows))
    lines.append(f"Rendered by: `{command}`")
    lines.append("")
    first = rows[0]
    m = first.get("machine") or {}
    lines.append(
        f"Dataset(s): {', '.join(str(d) for d in _uniq(rows, 'dataset'))}; split: "
        f"{', '.join(str(x) for x in _uniq(rows, 'split')) or _DASH}  "
    )
    lines.append(
        f"Machine: {m.get('platform', _DASH)}, {m.get('cpus', m.get('cpu_count', _DASH))} CPUs, "
        f"torch {m.get('torch', _DASH)}; date (UTC): {_date_range(rows)}"
    )
    lines.append("")
    aggregates = [r for r in rows if r.get("aggregate")]
    covered = {(r.get("model"), r.get("protocol")) for r in aggregates}
    # a model's seed rows give way to its aggregate row; rows of single-seed models stay
    shown = [r for r in rows if r.get("aggregate") or (r.get("model"), r.get("protocol")) not in covered]
    if aggregates:
        seeds = sorted({s for r in aggregates for s in r.get("seeds") or []} - {None})
        lines += [
            f"Mean +- standard deviation over seeds {seeds} where a +- is shown; other rows: one run.",
            "",
        ]
    for protocol in _uniq(shown, "protocol"):
        prow = [r for r in shown if r.get("protocol") == protocol]
        keys = [
            k
            for k in GENERIC_METRICS.get(suite, DEFAULT_METRICS)
            if any(k in (r.get("metrics") or {}) for r in prow)
        ]
        if not keys:
            keys = [k for k, v in (prow[0].get("metrics") or {}).items() if isinstance(v, (int, float))][:6]
        extra = "params" if suite == "ann" else "train s"
        seq = suite.startswith(("seq-", "session-"))
        timing = ["epochs (best)", "s/epoch", "s to best", "samples/s", "positions/s"] if seq else []
        if suite == "ann":
            timing = ["x exact (1t)", "build s", "index MB"]
        lines += [
            f"### {protocol}",
            "",
            "| model | " + " | ".join(keys) + f" | {extra} |" + "".join(f" {t} |" for t in timing),
            "|---|" + "---:|" * (len(keys) + 1 + len(timing)),
        ]
        for r in prow:
            met, std = r.get("metrics") or {}, r.get("metrics_std") or {}
            cells = [
                _num(met.get(k)) + (f" +- {std[k]:.4f}" if isinstance(std.get(k), (int, float)) else "")
                for k in keys
            ]
            name = str(r.get("model"))
            if suite == "ann":
                last = json.dumps(r.get("params"), sort_keys=True) if r.get("params") else _DASH
                name = f"{name} ({r.get('dataset')})"
                last += " | " + " | ".join(
                    _num(r.get(k)) for k in ("speedup_1t", "build_seconds", "index_mb")
                )
            else:
                last = _num(r.get("train_seconds"))
            if seq:
                best = f"{r['epochs_run']} ({r['best_epoch']})" if r.get("epochs_run") else _DASH
                if r.get("aggregate") and r.get("best_epochs"):  # one run's count would mislead
                    best = "best " + "/".join(str(b) for b in r["best_epochs"])
                last += f" | {best} | " + " | ".join(
                    _num(r.get(k))
                    + (f" +- {r[k + '_std']:.1f}" if isinstance(r.get(k + "_std"), (int, float)) else "")
                    for k in (
                        "seconds_per_epoch",
                        "seconds_to_best_epoch",
                        "samples_per_second",
                        "positions_per_second",
                    )
                )
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {last} |")
        lines.append("")
    return lines + _stage_lines(rows)


#: serving figures shown beside the stage means when a row has them (serve-latency)
_SERVING = (
    ("mean_batch", "mean batch"),
    ("funnel_ms_per_request", "funnel CPU ms/req"),
    ("server_cpu_ms_per_request", "service CPU ms/req"),
    ("framework_overhead_ms", "outside funnel ms"),
)


def _stage_lines(rows: Sequence[dict]) -> list[str]:
    """Per-stage mean milliseconds of the rows that carry ``stage_ms`` (the service and funnel
    suites), the serving figures where rows have them, and the load average the machine had
    before each run."""
    staged = [r for r in rows if r.get("stage_ms")]
    if not staged:
        return []
    stages = sorted({k for r in staged for k in r["stage_ms"]}, key=lambda k: (k == "total", k))
    serving = [(k, label) for k, label in _SERVING if any(k in (r.get("metrics") or {}) for r in staged)]
    if serving:
        caption = (
            "Mean milliseconds of each funnel stage per request (the whole funnel call that answered"
            " it: with micro-batching, several requests share one call); CPU per request is the"
            " funnel's total divided by the mean batch, and 'outside funnel' is the handler's mean"
            " minus the funnel's (FastAPI, the event-store read, waiting for the call in progress);"
            " the machine's 1-minute load average before the run:"
        )
    else:
        caption = (
            "Mean milliseconds per request in each funnel stage, and the machine's 1-minute load "
            "average before the run:"
        )
    lines = [
        caption,
        "",
        "| model | protocol | " + " | ".join([*stages, *(label for _, label in serving)]) + " | load avg |",
        "|---|---|" + "---:|" * (len(stages) + len(serving) + 1),
    ]
    for r in staged:
        load = r.get("load_average_before") or (r.get("machine") or {}).get("load_average")
        cells = [_num(r["stage_ms"].get(k)) for k in stages]
        cells += [_num((r.get("metrics") or {}).get(k)) for k, _ in serving]
        lines.append(
            f"| {r.get('model')} | {r.get('protocol')} | "
            + " | ".join(cells)
            + f" | {_num(load[0]) if load else _DASH} |"
        )
    return lines + [""]
