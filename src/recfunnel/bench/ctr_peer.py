"""Benchmark suite ``ctr-deepctr`` (issue 14 item 7): our DeepFM against ``deepctr-torch``'s DeepFM
at the same architecture, side by side in one process.

Both train on the same encoded rows of the ``ctr-ml100k`` task (MovieLens-100K, temporal split,
label rating >= 4; :func:`recfunnel.bench.ctr.encoded_parts`) with the same fields, embedding size,
tower (deepctr's default (256, 128), ReLU, no dropout, no batch norm), batch size (4096), Adam at
lr 1e-3, one torch thread, for the same epochs. Rounds alternate which library runs first, so a
shared machine's load falls on both; the figure is the median over rounds of samples per second
(wall time of the whole fit), with the test AUC of each model after its last round.

Fields map one to one: a categorical field -> ``SparseFeat``, a multi-hot or history field ->
``VarLenSparseFeat`` (mean pooling, code 0 = padding in both; a history shares the item-id table
via ``embedding_name``), a numeric field -> ``DenseFeat``. ``deepctr-torch`` is an optional bench
dependency (``pip install -e ".[bench]"``); without it the suite says how to install it.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np
import torch

from recfunnel.bench.ctr import DATASET, ctr_data, encoded_parts
from recfunnel.bench.rows import machine_info, peak_rss_mb, utc_now
from recfunnel.data.fields import CTRPart, FieldSchema
from recfunnel.eval.metrics import auc
from recfunnel.models.ctr.base import build_ctr
from recfunnel.train.labelled import LabelledBCE
from recfunnel.train.trainer import TrainConfig, Trainer, seed_everything

__all__ = ["SUITE", "deepctr_inputs", "run_ctr_peer_suite", "side_by_side"]

SUITE = "ctr-deepctr"
#: deepctr-torch's DeepFM defaults, which both sides use
HIDDEN = (256, 128)
EMBEDDING_DIM = 10
BATCH_SIZE = 4096


def _deepctr():
    try:
        from deepctr_torch.inputs import DenseFeat, SparseFeat, VarLenSparseFeat
        from deepctr_torch.models import DeepFM
    except ImportError as exc:
        raise RuntimeError(
            "suite ctr-deepctr compares against deepctr-torch: pip install 'deepctr-torch==0.3.0' "
            '(or pip install -e ".[bench]")'
        ) from exc
    return DenseFeat, SparseFeat, VarLenSparseFeat, DeepFM


def deepctr_inputs(schema: FieldSchema, embedding_dim: int = EMBEDDING_DIM) -> list[Any]:
    """deepctr-torch feature columns equal to `schema`'s fields (see the module docstring)."""
    dense_feat, sparse_feat, varlen_feat, _ = _deepctr()
    columns: list[Any] = []
    for f in schema:
        if f.kind == "numeric":
            columns.append(dense_feat(f.name, 1))
        elif f.kind == "categorical":
            columns.append(sparse_feat(f.name, vocabulary_size=f.cardinality, embedding_dim=embedding_dim))
        else:  # multi_hot, or a history sharing its item-id table
            table = schema[f.shares] if f.kind == "sequence" else f  # type: ignore[index]
            inner = sparse_feat(
                f.name,
                vocabulary_size=table.cardinality,
                embedding_dim=embedding_dim,
                embedding_name=table.name,
            )
            columns.append(varlen_feat(inner, maxlen=f.max_len, combiner="mean"))
    return columns


def _arrays(part: CTRPart, schema: FieldSchema) -> dict[str, np.ndarray]:
    return {f.name: part.fields[f.name].numpy() for f in schema}


def _ours_auc(model: Any, part: CTRPart) -> float:
    model.eval()
    with torch.no_grad():
        scores = torch.cat(
            [model.score_fields(part.fields.take(slice(s, s + 8192))) for s in range(0, len(part), 8192)]
        )
    return float(auc(part.labels.numpy(), scores.numpy()))


def side_by_side(
    schema: FieldSchema,
    parts: dict[str, CTRPart],
    *,
    rounds: int = 3,
    epochs: int = 1,
    batch_size: int = BATCH_SIZE,
    seed: int = 0,
) -> dict[str, Any]:
    """Fit both DeepFMs `rounds` times each on ``parts["train"]``, alternating the order; ->
    per-round wall seconds, samples/s medians, their ratio (ours / theirs) and each test AUC."""
    _, _, _, deepfm = _deepctr()
    train, test = parts["train"], parts["test"]
    columns = deepctr_inputs(schema)
    x_train, x_test = _arrays(train, schema), _arrays(test, schema)
    y_train = train.labels.numpy().astype(np.float32)
    cfg = TrainConfig(
        epochs=epochs, batch_size=batch_size, lr=1e-3, patience=0, monitor="auc", seed=seed, progress=False
    )
    params = {"embedding_dim": EMBEDDING_DIM, "hidden": HIDDEN, "dropout": 0.0}

    def ours() -> tuple[float, Any]:
        seed_everything(seed)
        model = build_ctr("deepfm", schema, params)
        t0 = time.perf_counter()
        Trainer(cfg).fit(model, LabelledBCE(train))
        return time.perf_counter() - t0, model

    def theirs() -> tuple[float, Any]:
        seed_everything(seed)
        model = deepfm(columns, columns, dnn_hidden_units=HIDDEN, dnn_dropout=0.0, seed=seed, device="cpu")
        model.compile(torch.optim.Adam(model.parameters(), lr=1e-3), "binary_crossentropy")
        t0 = time.perf_counter()
        model.fit(x_train, y_train, batch_size=batch_size, epochs=epochs, verbose=0, shuffle=True)
        return time.perf_counter() - t0, model

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    seconds: dict[str, list[float]] = {"ours": [], "deepctr": []}
    models: dict[str, Any] = {}
    try:
        for r in range(rounds):
            order = (("ours", ours), ("deepctr", theirs))
            for name, fn in order if r % 2 == 0 else order[::-1]:
                s, models[name] = fn()
                seconds[name].append(s)
    finally:
        torch.set_num_threads(before)
    n = len(train) * epochs
    sps = {k: n / statistics.median(v) for k, v in seconds.items()}
    their_scores = models["deepctr"].predict(x_test, batch_size=8192).reshape(-1)
    return {
        "rounds": rounds,
        "epochs": epochs,
        "batch_size": batch_size,
        "rows": len(train),
        "ours_seconds": seconds["ours"],
        "deepctr_seconds": seconds["deepctr"],
        "ours_samples_per_second": sps["ours"],
        "deepctr_samples_per_second": sps["deepctr"],
        "ratio_ours_over_deepctr": sps["ours"] / sps["deepctr"],
        "ours_test_auc": _ours_auc(models["ours"], test),
        "ours_params": sum(p.numel() for p in models["ours"].parameters()),
        "deepctr_test_auc": float(auc(test.labels.numpy(), np.asarray(their_scores))),
        "architecture": {"embedding_dim": EMBEDDING_DIM, "hidden": list(HIDDEN), "dropout": 0.0},
        "threads": 1,
    }


def run_ctr_peer_suite(
    quick: bool = False, data_root: str | None = None, progress: bool = True, seeds: Any = None
) -> list[dict]:
    """One row: :func:`side_by_side` on the ctr-ml100k task (quick: 1 round on a slice)."""
    del seeds
    ds, split = ctr_data(data_root, quick)
    schema, parts = encoded_parts(ds, split)
    fig = side_by_side(schema, parts, rounds=1 if quick else 5)
    if progress:
        print(
            f"[{SUITE}] ours {fig['ours_samples_per_second']:,.0f} samples/s vs deepctr-torch "
            f"{fig['deepctr_samples_per_second']:,.0f}: ratio {fig['ratio_ours_over_deepctr']:.2f}; test AUC "
            f"{fig['ours_test_auc']:.4f} vs {fig['deepctr_test_auc']:.4f}",
            flush=True,
        )
    return [
        {
            "suite": SUITE,
            "model": "DeepFM-vs-deepctr",
            "family": "deepfm",
            "dataset": ds.name or DATASET,
            "protocol": "throughput",
            "split": split.describe(),
            "seed": 0,
            "metrics": {"auc": fig["ours_test_auc"], "deepctr_auc": fig["deepctr_test_auc"]},
            "comparison": fig,
            "train_seconds": statistics.median(fig["ours_seconds"]),
            "eval_seconds": 0.0,
            "peak_rss_mb": peak_rss_mb(),
            "samples_per_second": fig["ours_samples_per_second"],
            "params": fig["ours_params"],
            "config": {"architecture": fig["architecture"], "batch_size": fig["batch_size"], "lr": 1e-3},
            "epochs_run": fig["epochs"],
            "best_epoch": None,
            "pipeline_share": None,
            "quick": quick,
            "machine": machine_info(),
            "date": utc_now(),
        }
    ]
