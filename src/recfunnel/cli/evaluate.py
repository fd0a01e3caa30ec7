"""`recfunnel evaluate`: a saved model on the split saved with it (or a given one of the same data)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from recfunnel.cli.common import ArtifactArg, DataRootOpt, check_k, console, err, fail, results_table

PROTOCOLS = ("full", "full-unmasked", "sampled")
PARTS = ("valid", "test")


def evaluate(
    artifact: ArtifactArg,
    protocol: Annotated[
        list[str],
        typer.Option(help="full, full-unmasked (repeats count: session data) and/or sampled (repeatable)"),
    ] = [
        "full",
        "sampled",
    ],
    k: Annotated[list[int], typer.Option("-k", help="cut-offs (repeatable)")] = [5, 10, 20],
    part: Annotated[str, typer.Option(help="test or valid")] = "test",
    split_file: Annotated[
        Path | None,
        typer.Option(
            help="evaluate on this saved split (.npz) of the same dataset (default: the artifact's split.npz)"
        ),
    ] = None,
    data_root: DataRootOpt = None,
) -> None:
    """Re-evaluate a saved model on the split saved with it (identical data to the training run),
    or on another saved split of the same dataset (--split-file)."""
    from recfunnel.artifacts import read_manifest
    from recfunnel.data.splits import Split
    from recfunnel.recommender import Recommender
    from recfunnel.run import RunConfig, evaluate_model, load_data

    bad = [p for p in protocol if p not in PROTOCOLS[:2] and not p.startswith("sampled")]
    if bad:
        fail(f"unknown protocol {bad[0]!r}; valid: {', '.join(PROTOCOLS)}")
    for cut in k:
        check_k(cut)
    if part not in PARTS:
        fail(f"--part {part!r} cannot be evaluated; valid: {', '.join(PARTS)}")
    rec = Recommender.load(artifact)
    run = RunConfig.model_validate((read_manifest(artifact).get("extra") or {}).get("run", {}))
    data_cfg = run.data.model_copy(update={"data_root": data_root}) if data_root else run.data
    ds = load_data(data_cfg)
    sp = Split.load(split_file or artifact / "split.npz")
    sp.check(ds)
    if sp.negatives.get(part) is None and any(p.startswith("sampled") for p in protocol):
        protocol = [p for p in protocol if not p.startswith("sampled")]
        err.print(
            f"note: sampled skipped: split {sp.describe()} has no fixed negatives "
            "(leave_one_out and random_holdout splits carry them)"
        )
        if not protocol:
            fail("nothing to evaluate: give --protocol full or full-unmasked for this split")
    results = evaluate_model(
        rec.model_, ds, sp, protocol, part, k, name=rec.family, seed=run.train.seed, skip_unavailable=False
    )
    where = f", split {split_file}" if split_file else ""
    console.print(results_table(results, f"{rec.family} on {ds.name} ({part}{where})"))
