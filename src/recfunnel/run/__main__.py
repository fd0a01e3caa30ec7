"""`python -m recfunnel.run --config RUN.toml|RUN.json --out DIR [--resume]`: one run of a
:class:`~recfunnel.run.config.RunConfig` through :func:`recfunnel.run.fit.fit`, as one process of a
distributed run when torch's launcher started it (``torchrun [--nnodes ...] -m recfunnel.run ...``;
``recfunnel train --nproc N`` launches this with the run's resolved config). Rank 0 writes the
checkpoints (``--checkpoint-dir``, default ``<out>.ckpt``), the artifact and ``--json`` (the test
results and the training report); exit status 0 on success, 1 on a recfunnel error (one line)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from recfunnel.atomic import atomic_write_text
from recfunnel.errors import RecfunnelError
from recfunnel.nn.device import resolve_device
from recfunnel.run.config import RunConfig
from recfunnel.train import distributed


def read_config(path: Path) -> RunConfig:
    """A RunConfig from a TOML file, or from the JSON `recfunnel train --nproc` writes."""
    if path.suffix == ".json":
        return RunConfig.model_validate_json(path.read_text())
    return RunConfig.from_toml(path)


def main(argv: list[str] | None = None) -> int:
    """Parse the options, join the launcher's process group (if any), fit; -> exit status."""
    p = argparse.ArgumentParser(prog="python -m recfunnel.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, required=True, help="run config, .toml or .json")
    p.add_argument("--out", type=Path, default=None, help="artifact folder (default: none written)")
    p.add_argument("--checkpoint-dir", type=Path, default=None, help="default <out>.ckpt")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    p.add_argument("--json", type=Path, default=None, help="write the results and report here")
    p.add_argument(
        "--device",
        default=None,
        help="cpu or cuda: the process group's gloo or nccl (default: the kind of the config's train.device)",
    )
    p.add_argument("--timeout", type=float, default=None, help="seconds a collective waits (default 30)")
    args = p.parse_args(argv)
    from recfunnel.run.fit import fit

    ckpt = args.checkpoint_dir or (Path(f"{args.out}.ckpt") if args.out is not None else None)
    try:
        cfg = read_config(args.config)
        device = args.device or resolve_device(cfg.train.device).type
        with distributed.session(device, args.timeout):
            res = fit(cfg, checkpoint_dir=ckpt, resume=args.resume, out=args.out)
            if args.json is not None and distributed.is_main():
                report = res.report
                summary = None if report is None else {
                    "epochs": len(report.history),
                    "best_epoch": report.best_epoch,
                    "seconds": report.seconds,
                    "samples_per_second": report.samples_per_second,
                    "pipeline_share": report.pipeline_share,
                    "history": report.history,
                }  # fmt: skip
                body = {"results": [r.to_dict() for r in res.results], "report": summary,
                        "path": None if res.path is None else str(res.path)}  # fmt: skip
                atomic_write_text(args.json, json.dumps(body, indent=1))
    except (RecfunnelError, ValueError, OSError) as e:
        print(f"error (rank {os.environ.get('RANK', 0)}): {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
