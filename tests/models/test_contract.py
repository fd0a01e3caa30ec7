"""The model contract covers every registered family exactly once, and the synthetic dataset it runs
on has what every family reads (feature tables, time, ratings with both CTR labels). Two-tower's
contract class lives here (without text vectors: no text model download)."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
from contract import ModelContract, synthetic_movielens

from recfunnel.data.dataset import Dataset
from recfunnel.models.registry import MODELS

HERE = Path(__file__).parent


def contract_classes() -> dict[str, list[str]]:
    """family -> the `file::Class` names of the ModelContract subclasses in tests/models/test_*.py,
    read from the source (a module that fails to import still shows what it declares)."""
    out: dict[str, list[str]] = {}
    for path in sorted(HERE.glob("test_*.py")):
        for node in ast.parse(path.read_text(), filename=str(path)).body:
            if not isinstance(node, ast.ClassDef):
                continue
            if not any(isinstance(b, ast.Name) and b.id == "ModelContract" for b in node.bases):
                continue
            family = next(
                (
                    stmt.value.value
                    for stmt in node.body
                    if isinstance(stmt, ast.Assign)
                    and any(isinstance(t, ast.Name) and t.id == "family" for t in stmt.targets)
                    and isinstance(stmt.value, ast.Constant)
                ),
                None,
            )
            out.setdefault(str(family), []).append(f"{path.name}::{node.name}")
    return out


class TestTwoTower(ModelContract):
    family = "two-tower"
    params = {"dim": 8, "emb_dim": 4, "hidden": (16,), "history_len": 5}
    factorised = True


def test_every_registered_family_inherits_the_contract():
    declared = contract_classes()
    missing = sorted(set(MODELS) - set(declared))
    assert not missing, f"families without a ModelContract test class: {missing}"
    unknown = sorted(set(declared) - set(MODELS))
    assert not unknown, f"ModelContract classes naming no registered family: {unknown}: {declared}"
    assert len(MODELS) == 23


def test_synthetic_data_has_what_every_family_reads(synthetic: Dataset):
    assert synthetic.has_time and synthetic.interactions.rating is not None
    assert {"age", "gender", "occupation", "zip"} <= set(synthetic.user_features.columns)
    assert {"title", "year", "genres"} <= set(synthetic.item_features.columns)
    assert synthetic.item_titles()[:1] == [synthetic.item_features["title"][0]]
    labels = synthetic.interactions.rating >= 4
    assert 0.3 < labels.mean() < 0.8  # both CTR labels, neither rare
    counts = np.bincount(synthetic.interactions.user, minlength=synthetic.n_users)
    assert counts.min() >= 8 and "196" in synthetic.users and "50" in synthetic.items
    ints = synthetic.interactions  # no repeated (user, item) pair
    assert len(np.unique(ints.user * synthetic.n_items + ints.item)) == len(ints)


def test_synthetic_data_is_the_same_for_the_same_seed():
    a, b = synthetic_movielens(seed=3), synthetic_movielens(seed=3)
    assert a.fingerprint() == b.fingerprint() and a.user_features.equals(b.user_features)
    assert synthetic_movielens(seed=4).fingerprint() != a.fingerprint()
