"""Tests for recfunnel.eval.ctr: pointwise AUC / logloss / GAUC of a field scorer on a part."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import log_loss, roc_auc_score

from recfunnel.data.fields import CTRPart, FieldBatch
from recfunnel.eval.ctr import ctr_line, ctr_metrics, ctr_validator, evaluate_ctr, predict_logits


class TableScorer(torch.nn.Module):
    """Returns a fixed logit per row id (field "row"), so metrics can be checked by hand."""

    family = "table"

    def __init__(self, logits: np.ndarray) -> None:
        super().__init__()
        self.logits = torch.as_tensor(logits, dtype=torch.float32)
        self.calls = 0

    def score_fields(self, batch: FieldBatch) -> torch.Tensor:
        self.calls += 1
        assert not self.training  # evaluation runs in eval mode
        return self.logits[batch["row"]]


def _part(seed: int = 0, n: int = 300, users: int = 20):
    rng = np.random.default_rng(seed)
    u = rng.integers(0, users, n)
    y = (rng.random(n) < 0.3 + 0.02 * u).astype(np.float32)
    logits = rng.normal(size=n) + 1.5 * y
    part = CTRPart(FieldBatch({"row": torch.arange(n)}), torch.from_numpy(y), u, rng.integers(0, 9, n))
    return part, logits


def _naive_gauc(users, y, s):
    num = den = 0.0
    skipped = 0
    for u in np.unique(users):
        m = users == u
        if len(np.unique(y[m])) < 2:
            skipped += 1
            continue
        num += m.sum() * roc_auc_score(y[m], s[m])
        den += m.sum()
    return num / den, skipped


def test_metrics_match_scikit_learn_and_a_naive_gauc():
    part, logits = _part()
    part.labels[torch.from_numpy(part.users == 0)] = 1.0  # user 0: one class only -> skipped
    y = part.labels.numpy()
    m = ctr_metrics(part, logits)
    p = 1 / (1 + np.exp(-logits))
    assert m["auc"] == pytest.approx(roc_auc_score(y, logits))
    assert m["logloss"] == pytest.approx(log_loss(y, p))
    g, skipped = _naive_gauc(part.users, y, logits)
    assert m["gauc"] == pytest.approx(g) and m["gauc_users_skipped"] == skipped >= 1


def test_evaluate_ctr_scores_in_batches_and_names_the_protocol():
    part, logits = _part()
    model = TableScorer(logits)
    model.train()
    r = evaluate_ctr(
        model, part, name="T", dataset="toy", split="temporal", part_name="valid", seed=3, batch_size=64
    )
    assert model.calls == 5 and model.training  # 300 rows in 64s; training mode restored
    assert (r.protocol, r.model, r.dataset, r.split, r.part, r.seed) == (
        "pointwise",
        "T",
        "toy",
        "temporal",
        "valid",
        3,
    )
    assert r.n_users == len(np.unique(part.users)) and r.ks == ()
    assert set(r.metrics) == {"auc", "logloss", "gauc", "gauc_users_skipped"}
    assert r.metrics["auc"] == pytest.approx(roc_auc_score(part.labels.numpy(), logits))
    assert "auc=" in ctr_line(r) and "pointwise" in ctr_line(r)


def test_predict_logits_equals_one_big_batch():
    part, logits = _part(n=100)
    model = TableScorer(logits)
    model.eval()
    np.testing.assert_allclose(predict_logits(model, part.fields, batch_size=7), logits.astype(np.float32))


def test_validator_reports_auc_to_monitor():
    part, logits = _part(1)
    out = ctr_validator(part)(TableScorer(logits).eval())
    assert set(out) == {"auc", "logloss"}
    assert out["auc"] == pytest.approx(roc_auc_score(part.labels.numpy(), logits))


def test_a_constant_scorer_has_auc_one_half():
    part, _ = _part(2)
    r = evaluate_ctr(TableScorer(np.zeros(len(part))).eval(), part)
    assert r.metrics["auc"] == pytest.approx(0.5) and r.metrics["gauc"] == pytest.approx(0.5)
