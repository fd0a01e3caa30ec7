"""CTR rankers as artifact folders: the same manifest + safetensors format as every model, with the
fitted field schema (fields, their vocabularies and bucket edges) in the manifest, so a ranker
trained once can be loaded by a server or `recfunnel explain` without retraining.

    save_ctr(model, "artifacts/deepfm", metrics={"auc": 0.71})
    model = load_ctr("artifacts/deepfm")        # eval mode, identical logits

No pickle: weights are safetensors, the schema is JSON, every file is checksummed (see
:mod:`recfunnel.artifacts`). LightGBM is not a torch model and is not saved here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from recfunnel.artifacts import ArtifactError, load_artifact, save_artifact
from recfunnel.data.fields import FieldSchema
from recfunnel.models.ctr.base import CTRModel, build_ctr

__all__ = ["load_ctr", "save_ctr"]

KIND = "ctr-ranker"


def save_ctr(
    model: CTRModel,
    path: str | os.PathLike[str],
    metrics: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write `model` (weights, config, field schema) as an artifact folder, atomically."""
    if not isinstance(model, CTRModel):
        raise TypeError(f"save_ctr saves CTR rankers; got {type(model).__name__} (use Recommender.save)")
    return save_artifact(
        path,
        family=model.family,
        config={"kind": KIND, "model": model.config.model_dump(mode="json")},
        tensors={k: v.detach().cpu() for k, v in model.state_dict().items()},
        vocabs={},
        metrics=metrics,
        extra={**(extra or {}), "schema": model.schema.to_json()},
    )


def load_ctr(path: str | os.PathLike[str]) -> CTRModel:
    """Load a ranker saved by :func:`save_ctr` (checksums checked first), in eval mode."""
    art = load_artifact(path)
    if art.config.get("kind") != KIND:
        raise ArtifactError(
            f"{path} holds a {art.family!r} model, not a CTR ranker (load it with Recommender.load)"
        )
    try:
        schema = FieldSchema.from_json((art.extra or {})["schema"])
        model = build_ctr(art.family, schema, art.config["model"])
        model.load_state_dict(art.tensors)
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise ArtifactError(
            f"CTR artifact at {path} does not match this recfunnel's {art.family!r}: {e}"
        ) from None
    return model.eval()
