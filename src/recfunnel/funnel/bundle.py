"""A funnel bundle: one folder holding everything a service needs to answer, written in one atomic
step and checked whole before anything in it is used.

Layout::

    bundle.json          written last: format version, bundle id, the funnel config, the sources,
                         and the sha256 of every other file (relative path -> digest)
    data/                the serving dataset (train + valid interactions, vocabularies, feature
                         tables: recfunnel.data.store)
    models/<name>/       each model under [models], and models/ranker/ (model artifacts)
    indexes/<source>/    the ANN / item-to-item index of each retriever that has one

The bundle id is the first 16 hex digits of a sha256 over the sorted (path, digest) list, so equal
contents give equal ids and any change of a file changes it. :func:`load_bundle` refuses a bundle
whose manifest is missing (half-written), whose files differ from their digests or from the id,
which holds files the manifest does not list, whose format version is not this library's, or whose
index was not built from its retriever's item vectors; the message says which and why.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import recfunnel
from recfunnel.artifacts import ArtifactError
from recfunnel.atomic import atomic_dir, recover_dir
from recfunnel.data.dataset import Dataset
from recfunnel.data.sequences import user_sequences
from recfunnel.data.store import read_dataset, write_dataset
from recfunnel.folder import LIBRARY, sha256_file
from recfunnel.funnel.build import BuiltFunnel, funnel_filters, make_retriever, serving_dataset
from recfunnel.funnel.config import RANKER_MODEL, FunnelConfig
from recfunnel.funnel.funnel import Funnel
from recfunnel.funnel.ranker import (
    RetrievalScoreRanker,
    ScorerRanker,
    resolve_ranker_precision,
    set_ranker_precision,
)
from recfunnel.index import load_index
from recfunnel.run.artifact import load_model, save_model, seen_matrix
from recfunnel.run.scoring import candidate_scorer

__all__ = ["BUNDLE_MANIFEST", "FORMAT_VERSION", "Bundle", "BundleError", "load_bundle", "save_bundle"]

BUNDLE_MANIFEST = "bundle.json"
FORMAT_VERSION = 1


class BundleError(ArtifactError):
    """A funnel bundle is missing, half-written, tampered with, or from another format version."""


@dataclass
class Bundle:
    """A loaded bundle: its funnel, ready to answer, and what it was built from."""

    path: Path
    id: str
    config: FunnelConfig
    manifest: dict[str, Any]
    funnel: Funnel
    dataset: Dataset  # the serving dataset (train + valid interactions)
    models: dict[str, Any]


def _files(root: Path) -> dict[str, Path]:
    """Every file under `root` but the manifest: posix relative path -> path."""
    out: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            if rel != BUNDLE_MANIFEST:
                out[rel] = p
    return out


def bundle_id(digests: dict[str, str], config: dict[str, Any]) -> str:
    """The content id of a bundle: its files' digests and its funnel config."""
    h = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for rel in sorted(digests):
        h.update(f"{rel}\0{digests[rel]}\n".encode())
    return h.hexdigest()[:16]


def save_bundle(built: BuiltFunnel, out: str | os.PathLike[str]) -> Path:
    """Write `built` as a bundle folder at `out` in one atomic step (replacing what is there): a
    reader finds the old bundle or the complete new one, never a mixture."""
    cfg = built.config.resolved()
    ds, split, funnel = built.dataset, built.split, built.funnel
    served = serving_dataset(ds, split)
    seen = seen_matrix(ds, split)
    titles = ds.item_titles()
    out = Path(out)
    with atomic_dir(out) as tmp:
        write_dataset(served, tmp / "data")
        named = dict(built.models)
        if built.ranker_model is not None:
            named[RANKER_MODEL] = built.ranker_model
        for name, model in named.items():
            spec = cfg.models.get(name)
            fit = built.fits.get(name)
            run = fit.config if fit is not None else (spec.run_config(cfg.data, cfg.split) if spec else None)
            save_model(
                tmp / "models" / name,
                model,
                users=ds.users,
                items=ds.items,
                seen=seen,
                titles=titles,
                run=run,
            )
        for retriever in funnel.retrievers:
            index = getattr(retriever, "index", None)
            if index is not None:
                index.save(tmp / "indexes" / retriever.name)
        digests = {rel: sha256_file(p) for rel, p in _files(tmp).items()}
        config = cfg.model_dump(mode="json")
        manifest = {
            "library": LIBRARY,
            "library_version": recfunnel.__version__,
            "format_version": FORMAT_VERSION,
            "bundle_id": bundle_id(digests, config),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "config": config,
            "sources": [r.name for r in funnel.retrievers],
            "ranker": funnel.ranker.name,
            "dataset": {"name": ds.name, "fingerprint": ds.fingerprint(), "split": split.describe()},
            "serving_rows": len(served.interactions),
            "evaluation": built.evaluation,
            "files": digests,
        }
        text = json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        (tmp / BUNDLE_MANIFEST).write_text(text, encoding="utf-8")
    return out


def read_bundle_manifest(path: str | os.PathLike[str], verify: bool = True) -> dict[str, Any]:
    """The checked manifest of the bundle at `path`: present, JSON, this library and format
    version; with `verify`, every file there with its digest, nothing unlisted, and the id."""
    path = Path(path)
    recover_dir(path)
    if not path.is_dir():
        what = "it is a file" if path.exists() else "no such folder"
        raise BundleError(f"no funnel bundle at {path}: {what}")
    mpath = path / BUNDLE_MANIFEST
    if not mpath.is_file():
        raise BundleError(
            f"{mpath} is missing: {path} is half-written or not a funnel bundle (build one with "
            "`recfunnel build-funnel CONFIG --out DIR`)"
        )
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{mpath} is not valid JSON ({exc}): the bundle is corrupt") from None
    if not isinstance(manifest, dict) or manifest.get("library") != LIBRARY:
        raise BundleError(f"{mpath} is not a recfunnel bundle manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BundleError(
            f"{path}: bundle format v{manifest.get('format_version')} (written by recfunnel "
            f"{manifest.get('library_version')}); this recfunnel {recfunnel.__version__} reads "
            f"v{FORMAT_VERSION}: build the bundle again"
        )
    listed = manifest.get("files")
    if not isinstance(listed, dict) or not all(isinstance(v, str) for v in listed.values()):
        raise BundleError(f"{mpath} is malformed: 'files' must map paths to sha256 digests")
    if verify:
        present = _files(path)
        extra = sorted(set(present) - set(listed))
        if extra:
            raise BundleError(
                f"{path} holds {', '.join(extra[:5])}, not listed in {BUNDLE_MANIFEST}: a bundle is "
                "written whole, so it was changed afterwards; build it again"
            )
        for rel, digest in listed.items():
            if rel not in present:
                raise BundleError(
                    f"{path / rel} is missing (listed in {BUNDLE_MANIFEST}): the bundle is partial"
                )
            if sha256_file(present[rel]) != digest:
                raise BundleError(
                    f"{path / rel} does not match its sha256 in {BUNDLE_MANIFEST}: it was changed or "
                    "damaged after the bundle was built; build it again"
                )
        if manifest.get("bundle_id") != bundle_id(listed, manifest.get("config")):
            raise BundleError(
                f"{mpath}: bundle_id does not match the files and config it lists: the manifest was "
                "edited after the bundle was built; build it again"
            )
    return manifest


def load_bundle(
    path: str | os.PathLike[str],
    *,
    threads: int | None = None,
    mmap: bool = False,
    ranker_precision: str = "fp32",
    index_device: str | None = None,
) -> Bundle:
    """Check the bundle at `path` whole (see the module doc), then load its funnel. `mmap`: map the
    indexes' stored vectors read-only from the bundle's files (server processes share them).
    `ranker_precision`: "fp32", "bf16" (the ranker's MLP layers in bfloat16: faster on CPUs with
    AMX, scores to ~3 significant digits) or "auto" (bf16 where AMX is present); the funnel's
    ``ranker_precision`` says what was applied. `index_device`: where exact / IVF indexes search
    instead of their saved setting (the service passes "cpu": N server processes would otherwise
    each open a CUDA context on a GPU machine)."""
    precision = resolve_ranker_precision(ranker_precision)
    path = Path(path)
    manifest = read_bundle_manifest(path)
    try:
        cfg = FunnelConfig.model_validate(manifest["config"])
        served = read_dataset(path / "data")
    except (KeyError, ValueError, OSError) as exc:
        raise BundleError(f"{path}: {exc}") from None
    models = {name: load_model(path / "models" / name).model for name in cfg.models}
    for name, model in models.items():
        if model.n_items != served.n_items:
            raise BundleError(f"{path}: model {name!r} has {model.n_items} items, the data {served.n_items}")
    retrievers = []
    for spec in cfg.retrievers:
        index = None
        if spec.kind != "popular":
            folder = path / "indexes" / spec.source
            index = load_index(folder, threads=threads, mmap=mmap, device=index_device)
        try:
            retrievers.append(make_retriever(spec, models, served, index))
        except ArtifactError as exc:
            raise BundleError(f"{path}: retriever {spec.source!r}: {exc}") from None
    if cfg.ranker.kind == "retrieval":
        ranker: Any = RetrievalScoreRanker(source=cfg.ranker.source, fusion=cfg.ranker.fusion)
    else:
        ranker_model = load_model(path / "models" / RANKER_MODEL).model
        if not set_ranker_precision(ranker_model, precision):
            precision = "fp32"  # no MLP layers: nothing runs in bf16
        ranker = ScorerRanker(candidate_scorer(ranker_model, served))
    mmr = cfg.filters.mmr_model
    funnel = Funnel(
        retrievers,
        [r.quota for r in cfg.retrievers],
        ranker,
        funnel_filters(cfg.filters),
        user_vocab=served.users,
        item_vocab=served.items,
        seen=served.user_items(),
        histories=tuple(t.numpy() for t in user_sequences(served.interactions, served.n_users)),
        item_vectors=None if mmr is None else models[mmr].item_vectors().detach(),
        mmr_lambda=cfg.filters.mmr_lambda,
        max_recent=cfg.filters.max_recent,
    )
    funnel.bundle_id = manifest["bundle_id"]
    funnel.ranker_precision = precision if cfg.ranker.kind != "retrieval" else "fp32"
    return Bundle(path, manifest["bundle_id"], cfg, manifest, funnel, served, models)
