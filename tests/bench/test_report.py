import json

from recfunnel.bench.report import load_rows, render_markdown
from recfunnel.bench.suites import write_json

MACHINE = {
    "platform": "Linux-test",
    "processor": "x86_64",
    "cpu_count": 2,
    "cpus_usable": 2,
    "python": "3.11.0",
    "torch": "2.4.0",
    "torch_threads": 2,
}


def _row(model, protocol, family, hr10, ndcg10, **extra):
    metrics = {}
    for k in (5, 10, 20):
        metrics[f"hr@{k}"] = hr10 * k / 10
        metrics[f"ndcg@{k}"] = ndcg10 * k / 10
    metrics["mrr@10"] = 0.25
    row = {
        "suite": "toy-suite",
        "model": model,
        "family": family,
        "dataset": "toy",
        "protocol": protocol,
        "split": "leave_one_out(eval_negatives=99, negatives_seed=0)",
        "part": "test",
        "seed": 0,
        "metrics": metrics,
        "train_seconds": 12.345,
        "eval_seconds": 0.5,
        "peak_rss_mb": 512.0,
        "peak_rss_scope": "process so far",
        "params": 123456,
        "epochs_run": 7,
        "best_epoch": 4,
        "samples_per_second": 150123.4,
        "pipeline_share": 0.0345,
        "epoch_seconds": 10.0,
        "data": {"n_users": 9, "n_items": 20, "n_interactions": 100, "n_train": 82},
        "machine": MACHINE,
        "date": "2025-01-02T03:04:05+00:00",
        "quick": False,
    }
    row.update(extra)
    return row


def _rows():
    comp = {
        "against": "implicit-bpr",
        "implicit_train_seconds": 2.0,
        "ours_train_seconds": 10.0,
        "ratio_ours_over_implicit": 5.0,
        "same_epochs": 7,
        "ours_epochs": 7,
        "implicit_epochs": 7,
        "ours_threads": 2,
        "implicit_threads": 2,
    }
    rows = []
    for p in ("full", "sampled-99"):
        rows.append(_row("NeuMF", p, "neumf", 0.6432, 0.3791))
        rows.append(_row("MF-BPR", p, "mf", 0.6211, 0.3522, comparison=comp))
        rows.append(_row("implicit-bpr", p, "implicit-bpr", 0.5012, 0.2803, samples_per_second=None))
    return rows


def test_render_markdown_numbers_and_machine():
    md = render_markdown(_rows(), "recfunnel bench ncf-ml100k")
    assert "## toy-suite" in md
    assert "`recfunnel bench ncf-ml100k`" in md
    assert "### full" in md and "### sampled-99" in md
    assert "99 fixed negatives" in md and "all* items" in md
    assert "Machine: Linux-test, x86_64, 2 CPUs usable" in md and "torch 2.4.0 (2 threads)" in md
    assert "2025-01-02T03:04:05+00:00" in md
    line = "| NeuMF | 0.3216 | 0.6432 | 1.2864 | 0.1895 | 0.3791 | 0.7582 | 0.2500 | 12.3 | 7 (5) | 150,123 |"
    assert line + " 123,456 | 512 |" in md
    assert "| implicit-bpr |" in md and "| – |" in md  # missing samples/s shown as a dash
    # implicit comparison sentence, from the comparison entry and both models' rows
    assert "ratio ours/implicit = 5.00x" in md
    assert "ours 0.6211 / 0.3522, implicit 0.5012 / 0.2803" in md
    assert "the same 7 epochs" in md
    # NeuMF throughput and pipeline share
    assert "150,123 samples/s" in md and "3.5% of epoch time" in md
    assert "9 users, 20 items" in md


def test_render_markdown_quick_banner_and_two_suites():
    rows = _rows()
    other = [dict(r, suite="other", quick=True) for r in rows[:2]]
    md = render_markdown(rows + other, "cmd")
    assert md.index("## toy-suite") < md.index("## other")
    assert md.count("Quick run") == 1


def test_json_round_trip(tmp_path):
    rows = _rows()
    path = write_json(rows, tmp_path / "sub" / "r.json")
    assert load_rows(path) == rows
    assert load_rows([path, path]) == rows + rows
    (tmp_path / "wrapped.json").write_text(json.dumps({"rows": rows}))
    assert load_rows(tmp_path / "wrapped.json") == rows
    assert render_markdown(load_rows(path), "c") == render_markdown(rows, "c")


def test_plots_are_drawn_from_the_rows_and_linked_from_the_markdown(tmp_path):
    from recfunnel.bench.plots import render_plots
    from recfunnel.bench.report import render_markdown

    ann = [
        {
            "suite": "ann",
            "dataset": "toy",
            "backend": b,
            "model": b,
            "protocol": "p",
            "n_items": 10,
            "search_param": sp,
            "default": d,
            "metrics": {"qps_1t": q, "recall@10": r},
        }
        for b, sp, d, q, r in [
            ("exact", None, False, 10.0, 1.0),
            ("hnsw", {"ef_search": 16}, False, 100.0, 0.9),
            ("hnsw", {"ef_search": 64}, True, 50.0, 0.99),
        ]
    ]
    seq = [
        {
            "suite": "seq-toy",
            "model": m,
            "protocol": "full",
            "metrics": {"ndcg@10": 0.1},
            "config": {"valid_protocol": "sampled"},
            "valid_history": [{"epoch": e, "train_seconds": 1.0, "valid_ndcg@10": 0.1 * e} for e in range(3)],
        }
        for m in ("A", "B")
    ]
    made = render_plots(ann + seq + [{"suite": "seq-toy", "model": "Pop", "metrics": {}}], tmp_path)
    assert set(made) == {"ann", "seq-toy"}
    for paths in made.values():
        for path in paths:
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = render_markdown(seq, "cmd", plots={"seq-toy": ["plots/seq-toy-curves.png"]})
    assert "![seq-toy: seq-toy-curves](plots/seq-toy-curves.png)" in text


def test_aggregate_rows_replace_their_seed_rows_and_single_seed_rows_stay():
    from recfunnel.bench.report import render_markdown

    base = {"suite": "retrieval-ml100k", "protocol": "full", "dataset": "d", "split": "s"}
    rows = [
        {**base, "model": "A", "seed": 0, "metrics": {"ndcg@10": 0.11}, "train_seconds": 1.0},
        {**base, "model": "A", "seed": 1, "metrics": {"ndcg@10": 0.13}, "train_seconds": 1.0},
        {
            **base,
            "model": "A",
            "seed": None,
            "seeds": [0, 1],
            "aggregate": True,
            "metrics": {"ndcg@10": 0.12},
            "metrics_std": {"ndcg@10": 0.0141},
            "train_seconds": 1.0,
        },
        {**base, "model": "EASE", "seed": 0, "metrics": {"ndcg@10": 0.07}, "train_seconds": 0.5},
    ]
    text = render_markdown(rows, "cmd")
    assert "| A | 0.1200 +- 0.0141 |" in text and "| EASE | 0.0700 |" in text
    assert "0.1100" not in text and "seeds [0, 1]" in text


def test_rows_name_the_commands_that_wrote_them():
    from recfunnel.bench.report import render_markdown

    base = {"suite": "seq-toy", "protocol": "full", "dataset": "d", "metrics": {"ndcg@10": 0.1}}
    rows = [
        {**base, "model": "A"},
        {**base, "model": "B", "command": "recfunnel bench seq-toy -m B --json x"},
    ]
    text = render_markdown(rows, "cmd")
    assert (
        "Rows measured by: `recfunnel bench seq-toy --json bench/results/seq-toy.json`; then "
        "`recfunnel bench seq-toy -m B --json x`" in text
    )


def test_a_sequence_aggregate_row_shows_each_seed_best_epoch_and_timing_spread():
    from recfunnel.bench.rows import aggregate_seeds

    base = {"suite": "seq-toy", "protocol": "full", "dataset": "d", "split": "s", "model": "S"}
    runs = [
        {
            **base,
            "seed": s,
            "metrics": {"ndcg@10": n},
            "train_seconds": 10.0,
            "epochs_run": e + 4,
            "best_epoch": e,
            "seconds_per_epoch": spe,
            "seconds_to_best_epoch": tb,
        }
        for s, n, e, spe, tb in ((0, 0.10, 20, 16.0, 600.0), (1, 0.12, 24, 18.0, 700.0))
    ]
    text = render_markdown(runs + aggregate_seeds(runs), "cmd")
    # mean +- std of the seconds (std of 600 and 700, ddof 1: 70.7), each seed's best epoch
    assert "| S | 0.1100 +- 0.0141 |" in text
    assert "| best 20/24 | 17.0000 +- 1.4 | 650 +- 70.7 |" in text
