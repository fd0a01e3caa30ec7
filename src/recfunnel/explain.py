"""Why a ranker scored one (user, item) pair as it did: AutoInt's attention between fields and the
FM pairwise terms largest in magnitude, as data (:func:`explain_pair`) and as text
(:func:`format_explanation`), for the ``recfunnel explain`` command.

The pair is encoded as a request: the user's and item's table values, the request time (hour,
weekday) and the user's last items strictly before that time.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recfunnel.artifacts import ArtifactError
from recfunnel.data.dataset import Dataset, Interactions
from recfunnel.data.fields import PAD, FieldBatch, FieldSchema, encode_events

__all__ = ["Explanation", "default_cache_dir", "explain_pair", "format_explanation", "train_explainers"]


@dataclass(frozen=True)
class Explanation:
    """What :func:`explain_pair` found for one (user, item) at one time.

    attention: AutoInt's alpha [layers, heads, F (query), F (key)], rows summing to 1, or None.
    top_attention: the largest head-averaged weights between *different* fields, per layer:
        dicts {layer, query, key, weight}, largest first.
    attention_entropy: per layer, the mean entropy of the attention rows over log(F): 1 means
        uniform attention (every field weighted 1/F), 0 one field per query.
    fm_terms: the FM pairwise terms <v_i, v_j> largest in magnitude: dicts {a, b, term}.
    """

    user: str
    item: str
    timestamp: int
    fields: tuple[str, ...]
    values: dict[str, str]
    autoint_probability: float | None = None
    attention: np.ndarray | None = None
    top_attention: list[dict[str, Any]] = field(default_factory=list)
    attention_entropy: list[float] = field(default_factory=list)
    fm_family: str | None = None
    fm_probability: float | None = None
    fm_terms: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["fields"] = list(self.fields)
        d["attention"] = None if self.attention is None else self.attention.tolist()
        return d


def _decode_row(schema: FieldSchema, batch: FieldBatch, dataset: Dataset) -> dict[str, str]:
    titles = dataset.item_titles()
    out = {}
    for f in schema:
        x = batch[f.name][0]
        if f.kind == "numeric":
            out[f.name] = f"{float(x) * f.std + f.mean:g}"
        elif f.kind == "sequence":
            ids = [schema[f.shares].decode(int(c)) for c in x.tolist() if c != PAD]  # type: ignore[index]
            out[f.name] = ", ".join(ids) if ids else "(none)"
        elif f.kind == "multi_hot":
            out[f.name] = ", ".join(f.decode(int(c)) for c in x.tolist() if c != PAD) or "(none)"
        else:
            out[f.name] = f.decode(int(x))
    if titles is not None and "item_id" in out and out["item_id"] in dataset.items:
        out["item_id"] += f" ({titles[dataset.items.index(out['item_id'])]})"
    return out


def explain_pair(
    dataset: Dataset,
    schema: FieldSchema,
    user: str,
    item: str,
    *,
    autoint: torch.nn.Module | None = None,
    fm: torch.nn.Module | None = None,
    timestamp: int | None = None,
    log: Interactions | None = None,
    top: int = 10,
) -> Explanation:
    """Explain the score of raw ids (`user`, `item`) at `timestamp` (unix seconds; default one
    second after the last event of `log`, i.e. "now").

    Args:
        autoint: a trained AutoInt (anything with ``attention_weights(batch)``), or None.
        fm: a trained FM or DeepFM (anything with ``pairwise_terms(batch)``), or None.
        log: the events histories read (default: all the dataset's interactions).
        top: how many field pairs to keep in `top_attention` (per layer) and `fm_terms`.

    Raises:
        KeyError: an id the dataset does not know (the message names the vocabulary).
    """
    u, i = dataset.users.index(user), dataset.items.index(item)
    log = dataset.interactions if log is None else log
    t = int(log.timestamp.max()) + 1 if timestamp is None else int(timestamp)
    batch = encode_events(schema, dataset, np.array([u]), np.array([i]), np.array([t]), log)
    names = schema.names
    info: dict[str, Any] = {}
    if autoint is not None:
        autoint.eval()
        with torch.no_grad():
            info["autoint_probability"] = float(torch.sigmoid(autoint.score_fields(batch))[0])
        alpha = autoint.attention_weights(batch)[0].numpy()  # [L, H, F, F]
        info["attention"] = alpha
        pairs = []
        for layer, a in enumerate(alpha.mean(axis=1)):  # head average [F, F]
            q, k = np.nonzero(~np.eye(len(names), dtype=bool))
            for j in np.argsort(-a[q, k], kind="stable")[:top]:
                pairs.append(
                    {"layer": layer, "query": names[q[j]], "key": names[k[j]], "weight": float(a[q[j], k[j]])}
                )
        info["top_attention"] = pairs
        ent = -(alpha * np.log(np.clip(alpha, 1e-12, None))).sum(-1) / np.log(len(names))
        info["attention_entropy"] = ent.mean(axis=(1, 2)).tolist()
    if fm is not None:
        fm.eval()
        with torch.no_grad():
            info["fm_probability"] = float(torch.sigmoid(fm.score_fields(batch))[0])
            terms = fm.pairwise_terms(batch)[0].numpy()
        a, b = np.triu_indices(len(names), k=1)
        vals = terms[a, b]
        order = np.argsort(-np.abs(vals), kind="stable")[:top]
        info["fm_family"] = getattr(fm, "family", type(fm).__name__)
        info["fm_terms"] = [{"a": names[a[j]], "b": names[b[j]], "term": float(vals[j])} for j in order]
    return Explanation(user, item, t, names, _decode_row(schema, batch, dataset), **info)


def format_explanation(e: Explanation, matrix: bool = True) -> str:
    """Plain text: the row's field values, AutoInt's strongest field pairs per layer (and its
    head-averaged attention matrix of the last layer when `matrix`), the FM terms."""
    lines = [f"user {e.user}, item {e.item}, at {e.timestamp} (unix seconds)", "", "fields:"]
    width = max(len(n) for n in e.fields)
    lines += [f"  {n:<{width}}  {e.values[n]}" for n in e.fields]
    if e.attention is not None:
        lines += ["", f"AutoInt: p(like) = {e.autoint_probability:.3f}"]
        layers, heads = e.attention.shape[:2]
        for layer in range(layers):
            lines.append(
                f"  layer {layer + 1}: strongest attention between fields (mean of {heads} heads; "
                f"entropy {e.attention_entropy[layer]:.3f} of uniform's 1)"
            )
            for p in (p for p in e.top_attention if p["layer"] == layer):
                lines.append(f"    {p['query']:>{width}} -> {p['key']:<{width}}  {p['weight']:.3f}")
        if matrix:
            a = e.attention[-1].mean(axis=0)
            short = [n[:6] for n in e.fields]
            lines += ["", f"  last layer, query (row) x key (column), mean of {heads} heads; rows sum to 1:"]
            lines.append("  " + " " * width + " " + " ".join(f"{s:>6}" for s in short))
            for n, row in zip(e.fields, a, strict=True):
                lines.append(f"  {n:>{width}} " + " ".join(f"{x:6.3f}" for x in row))
    if e.fm_terms:
        lines += [
            "",
            f"{e.fm_family}: p(like) = {e.fm_probability:.3f}; pairwise terms <v_a, v_b> largest in |.|",
        ]
        for t in e.fm_terms:
            lines.append(f"  {t['a']:>{width}} x {t['b']:<{width}}  {t['term']:+.4f}")
    return "\n".join(lines)


def train_explainers(
    dataset: Dataset,
    split,
    seed: int = 0,
    epochs: int = 20,
    progress: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
) -> tuple[FieldSchema, torch.nn.Module, torch.nn.Module]:
    """Fit the MovieLens fields on the split's train part and train an AutoInt and an FM with
    the suite's settings (early stopping on validation AUC): (schema, autoint, fm).

    `cache_dir`: keep the trained rankers there as artifacts (:func:`recfunnel.run.save_fit`),
    keyed by dataset fingerprint, split, seed and epochs, and load them instead of training when a
    matching pair is there (a later `recfunnel explain` answers in seconds)."""
    from recfunnel.run import RunConfig, fit, load_model, save_fit
    from recfunnel.run.presets import ctr_preset

    key = hashlib.sha256(
        f"{dataset.fingerprint()}|{split.describe()}|{len(split.train)}|seed={seed}|epochs={epochs}".encode()
    ).hexdigest()[:16]
    folders = {f: Path(cache_dir) / f"{f}-{key}" for f in ("autoint", "fm")} if cache_dir else {}
    if folders and all((p / "manifest.json").is_file() for p in folders.values()):
        try:
            autoint, fm = load_model(folders["autoint"]).model, load_model(folders["fm"]).model
            return autoint.schema, autoint, fm
        except ArtifactError:
            pass  # a damaged cache entry: train again and overwrite it
    out = []
    for family in ("autoint", "fm"):
        params, train = ctr_preset(family)
        cfg = RunConfig().updated(
            {
                "model": {"name": family, "params": params},
                "train": dict(train, epochs=epochs, seed=seed, progress=progress),
            }
        )
        res = fit(cfg, dataset, split)
        if folders:
            save_fit(res, folders[family])
        out.append(res.model.eval())
    return out[0].schema, out[0], out[1]


def default_cache_dir() -> Path:
    """``$RECFUNNEL_CACHE/explain``, else ``~/.cache/recfunnel/explain``."""
    base = os.environ.get("RECFUNNEL_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "recfunnel") / "explain"
