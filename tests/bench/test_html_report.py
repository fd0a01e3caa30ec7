"""The HTML report: tables with intervals and marks under their protocol and split, charts with titles
and axis labels, a self-contained page, and (where Chromium is installed) no broken image in a real
browser."""

from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import pytest
from matplotlib.figure import Figure
from typer.testing import CliRunner

from recfunnel.bench.html_report import build_report, check_in_browser, figure_label_problems, find_chromium
from recfunnel.bench.rows import aggregate_seeds, result_rows, write_json
from recfunnel.cli import app
from recfunnel.eval.result import Result
from recfunnel.eval.stats import holm, pack_vector, paired_test, t_interval_of

SPLIT = "leave_one_out(eval_negatives=99, negatives_seed=0)"
N_USERS = 300
NO_CHROMIUM = "headless Chromium is not installed (Debian: apt-get install chromium; .ci/run installs it)"


def _vector(rng: np.random.Generator, hit_rate: float) -> np.ndarray:
    """Leave-one-out NDCG@10 per user: 0 on a miss, else 1 / log2(rank + 2)."""
    hit = rng.random(N_USERS) < hit_rate
    return np.where(hit, 1 / np.log2(rng.integers(0, 10, N_USERS) + 2), 0.0)


def _row(model: str, seed: int, ndcg: np.ndarray, seconds: float, coverage: float, pop_pct: float) -> dict:
    recall = (ndcg > 0).astype(float)
    m = float(recall.mean())
    metrics = {
        "ndcg@10": float(ndcg.mean()),
        "recall@10": m,
        "hr@10": m,
        "recall@5": 0.6 * m,
        "recall@20": min(1.0, 1.4 * m),
        "coverage@10": coverage,
        "gini@10": 0.9 - coverage / 2,
        "novelty@10": 2.0 + coverage,
        "pop_pct@10": pop_pct,
        "long_tail@10": coverage / 3,
    }
    return {
        "suite": "toy-ml100k",
        "model": model,
        "dataset": "ml-100k",
        "protocol": "full",
        "split": SPLIT,
        "part": "test",
        "seed": seed,
        "metrics": metrics,
        "train_seconds": seconds,
        "data": {"n_users": N_USERS, "n_items": 1682, "n_interactions": 100000},
        "n_eval_users": N_USERS,
        "date": "2025-01-02T03:04:05+00:00",
        "quick": False,
        "per_user": {"ndcg@10": pack_vector(ndcg), "recall@10": pack_vector(recall)},
        "per_user_users": "same-users",
    }


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    rng = np.random.default_rng(0)
    out = [
        _row("Popularity", 0, _vector(rng, 0.05), 0.1, 0.02, 99.0),
        _row("EASE", 0, _vector(rng, 0.25), 2.0, 0.30, 93.0),
    ]
    out += [_row("MF-BPR", s, _vector(rng, 0.12), 30.0 + s, 0.10, 97.0) for s in range(3)]
    out += aggregate_seeds(out)
    # a second protocol without per-user vectors (an older file): no marks, no interval
    out.append({**_row("EASE", 0, _vector(rng, 0.5), 2.0, 0.3, 93.0), "protocol": "sampled-99"})
    del out[-1]["per_user"], out[-1]["per_user_users"]
    return out


@pytest.fixture(scope="module")
def report(rows):
    return build_report(
        rows, baseline="Popularity", sources=["toy.json"], command="recfunnel report toy.json"
    )


def test_every_table_has_its_protocol_and_split_stated_above_it(report):
    chunks = report.html.split("<table")
    assert len(chunks) == 4  # full: metrics + paired comparison; sampled-99: metrics
    for before in chunks[:-1]:
        context = before.split("</table>")[-1]
        assert 'class="context"' in context and "<b>Protocol</b>" in context and SPLIT in context
    assert "each held-out item is ranked against 99 fixed negatives" in report.html


def test_intervals_come_from_users_or_seeds_and_marks_from_holm_corrected_paired_tests(rows, report):
    full = report.tables[0]
    by = {ln.model: ln for ln in full.lines}
    assert by["EASE"].ci_from["ndcg@10"] == "users" and by["MF-BPR"].ci_from["ndcg@10"] == "seeds"
    assert by["MF-BPR"].n_seeds == 3 and "coverage@10" not in by["EASE"].ci  # no per-user guardrails
    lo, hi = by["EASE"].ci["ndcg@10"]
    assert lo < by["EASE"].mean["ndcg@10"] < hi
    # the marks: Wilcoxon against the baseline on the same users, Holm over the two models
    vec = {ln.model: ln.per_user["ndcg@10"] for ln in full.lines}
    raw = [paired_test(vec[m], vec["Popularity"]).wilcoxon_p for m in ("EASE", "MF-BPR")]
    got = full.tests["ndcg@10"]
    assert [got[m][1] for m in ("EASE", "MF-BPR")] == pytest.approx(holm(raw).tolist())
    ease_row = re.search(r"<tr><td>EASE</td>.*?</tr>", report.html).group(0)
    assert "▲***" in ease_row and "[" in ease_row
    assert "Popularity <i>(baseline)</i>" in report.html
    sampled = report.tables[1]
    assert not sampled.tests and not sampled.lines[0].ci
    assert "no significance marks: the baseline Popularity is not in this table" in report.html
    assert "no significance marks: the rows keep no per-user vectors" in build_report(rows[-1:]).html


def test_an_aggregate_row_alone_gives_a_t_interval_from_its_mean_and_std(rows):
    (agg,) = [r for r in rows if r.get("aggregate")]
    (line,) = build_report([agg]).tables[0].lines
    mean, sd = agg["metrics"]["ndcg@10"], agg["metrics_std"]["ndcg@10"]
    assert line.n_seeds == 3 and line.ci_from["ndcg@10"] == "seeds"
    assert line.ci["ndcg@10"] == pytest.approx(t_interval_of(mean, sd, 3))
    assert "per_user" not in agg and not line.per_user  # the seed rows keep the vectors


def test_page_is_self_contained_escaped_and_free_of_per_user_data(rows, report):
    page = report.html
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert "<script" not in page and "<link" not in page
    imgs = re.findall(r"<img [^>]*>", page)
    assert len(imgs) == len(report.charts) >= 6
    assert all('src="data:image/png;base64,' in i and re.search(r'alt="[^"]+"', i) for i in imgs)
    assert rows[0]["per_user"]["ndcg@10"] not in page
    odd = build_report([{**rows[1], "model": "<b>x&y</b>"}])
    assert "&lt;b&gt;x&amp;y&lt;/b&gt;" in odd.html and "<b>x&y</b>" not in odd.html


def test_each_chart_has_a_title_and_axis_labels_and_a_bare_figure_is_refused(report):
    kinds = {c.title for c in report.charts}
    assert {
        "ndcg@10 by model",
        "ndcg@10 vs training time",
        "recall@K curves",
        "ndcg@10 vs guardrails",
    } <= kinds
    for c in report.charts:
        assert c.png.startswith(b"\x89PNG") and c.labels
        assert all(title and x and y for title, x, y in c.labels if title) and all(
            x and y for _, x, y in c.labels
        )
    fig = Figure()
    fig.add_subplot().plot([0, 1], [0, 1])
    assert figure_label_problems(fig) == [
        "axes 0 has no title",
        "axes 0 ('') has no x label",
        "axes 0 ('') has no y label",
    ]


def test_evaluation_results_reach_the_report_through_bench_rows():
    users = np.arange(50)
    rng = np.random.default_rng(1)
    results = []
    for model, rate in (("A", 0.1), ("B", 0.6)):
        v = _vector(rng, rate)[:50]
        per_user = {"ndcg@10": v, "recall@10": (v > 0).astype(float)}
        metrics = {k: float(x.mean()) for k, x in per_user.items()}
        results.append(
            Result(model, "toy", "full", SPLIT, "test", (10,), 0, 50, metrics, 0.1, per_user, users)
        )
    ds = SimpleNamespace(n_users=50, n_items=9, interactions=range(100))
    rows = [row for r in results for row in result_rows("toy", r.model, [r], ds, 80, {}, True, False)]
    assert rows[0]["per_user_users"] == rows[1]["per_user_users"]
    table = build_report(rows, baseline="A").tables[0]
    assert table.tests["ndcg@10"]["B"][0].mean_diff == pytest.approx(
        results[1].metrics["ndcg@10"] - results[0].metrics["ndcg@10"], abs=1e-6
    )


def test_report_command_writes_the_page_and_each_chart_as_png(rows, tmp_path):
    src = write_json(rows, tmp_path / "toy.json")
    out, pngs = tmp_path / "report.html", tmp_path / "png"
    res = CliRunner().invoke(
        app, ["report", str(src), "--out", str(out), "--png-dir", str(pngs), "--baseline", "EASE"]
    )
    assert res.exit_code == 0, res.output
    files = sorted(pngs.glob("*.png"))
    assert files and all(f.read_bytes().startswith(b"\x89PNG") for f in files)
    assert len(files) == out.read_text("utf-8").count("<img ")
    assert "EASE <i>(baseline)</i>" in out.read_text("utf-8")


@pytest.mark.skipif(find_chromium() is None, reason=NO_CHROMIUM)
def test_headless_chromium_decodes_every_chart_and_takes_a_screenshot(rows, tmp_path):
    src = write_json(rows, tmp_path / "toy.json")
    out, shot = tmp_path / "report.html", tmp_path / "shot.png"
    res = CliRunner().invoke(
        app, ["report", str(src), "--out", str(out), "--check", "--screenshot", str(shot)]
    )
    assert res.exit_code == 0, res.output
    assert "images decoded, each with alt text" in res.output
    assert shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size > 10_000


@pytest.mark.skipif(find_chromium() is None, reason=NO_CHROMIUM)
def test_headless_chromium_check_finds_a_broken_image(tmp_path):
    page = tmp_path / "broken.html"
    page.write_text(
        '<!DOCTYPE html><html><body><img alt="broken chart" src="data:image/png;base64,AAAA">'
        '<img alt="" src="missing.png"></body></html>',
        "utf-8",
    )
    seen = check_in_browser(page)
    assert seen.broken == ["broken chart", "(no alt text)"] and seen.missing_alt == 1 and not seen.ok
