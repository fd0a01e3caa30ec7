"""Where recfunnel finds data, and library-wide defaults (no global mutable config)."""

from __future__ import annotations

import os
from pathlib import Path

#: Environment variable naming the folder that holds the datasets (one sub-folder per dataset).
DATA_ENV = "RECFUNNEL_DATA"

#: Repository root (two levels above this file in the src layout).
REPO_ROOT = Path(__file__).resolve().parents[2]


def data_root(override: str | os.PathLike[str] | None = None) -> Path:
    """The data root: `override` if given, else $RECFUNNEL_DATA, else `../shared/data` beside the repo.

    A relative `RECFUNNEL_DATA` is read relative to the current directory, like any path a user types.
    """
    if override is not None:
        return Path(override).expanduser()
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    beside_repo = (REPO_ROOT / ".." / "shared" / "data").resolve()
    beside_cwd = (Path.cwd() / ".." / "shared" / "data").resolve()
    # An installed (non-editable) package has no repo around it: fall back to the working directory.
    return beside_repo if beside_repo.is_dir() or not beside_cwd.is_dir() else beside_cwd


def dataset_dir(name: str, override: str | os.PathLike[str] | None = None) -> Path:
    """The folder of dataset `name` under the data root; a clear error if it is absent."""
    root = data_root(override)
    path = root / name
    if not path.is_dir():
        present = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        raise FileNotFoundError(
            f"dataset folder {path} not found (data root {root} from "
            f"{'--data-root' if override else DATA_ENV if os.environ.get(DATA_ENV) else 'the default'}); "
            f"present: {present or 'nothing'}. Set {DATA_ENV} or pass --data-root."
        )
    return path


def has_dataset(name: str, override: str | os.PathLike[str] | None = None) -> bool:
    """Whether dataset `name` is present under the data root (for skipping data-bound tests)."""
    try:
        dataset_dir(name, override)
    except FileNotFoundError:
        return False
    return True
