"""Full-ranking protocol on a hand-made case: which items are masked, and the unmasked variant
for session data (the next event may repeat an item seen before)."""

from __future__ import annotations

import math

import polars as pl
import pytest
import torch

from recfunnel.data.dataset import build_dataset
from recfunnel.data.splits import leave_one_out
from recfunnel.eval.protocols import evaluate


class FixedScores(torch.nn.Module):
    """Every user scores item i as scores[i]."""

    family = "fixed"

    def __init__(self, scores: list[float]) -> None:
        super().__init__()
        self.scores = torch.tensor(scores)

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        return self.scores.expand(len(users), -1).clone()


@pytest.fixture
def data():
    # user a: items 0, 1, 2 (train), 3 (valid), 1 (test: a repeat); user b: 4, 2, 0 -> test 0
    frame = pl.DataFrame(
        {
            "user": ["a", "a", "a", "a", "a", "b", "b", "b"],
            "item": [0, 1, 2, 3, 1, 4, 2, 0],
            "timestamp": [1, 2, 3, 4, 5, 1, 2, 3],
        }
    )
    ds = build_dataset("hand", frame)
    return ds, leave_one_out(ds)


def test_full_masks_train_and_valid_items_and_unmasked_ranks_every_item(data):
    ds, split = data
    model = FixedScores([0.5, 0.9, 0.8, 0.7, 0.1])  # item order by score: 1, 2, 3, 0, 4
    masked = evaluate(model, ds, split, "full", "test", ks=(1, 5))
    # a: test item 1 was a train item -> masked, never a hit; b: 0 ranks after 1, 3 (2 and 4 masked)
    assert masked.protocol == "full"
    assert masked.metrics["hr@5"] == pytest.approx(0.5)
    assert masked.metrics["ndcg@5"] == pytest.approx((0 + 1 / math.log2(4)) / 2)
    unmasked = evaluate(model, ds, split, "full-unmasked", "test", ks=(1, 5))
    # a: item 1 is ranked first; b: item 0 is 4th (after 1, 2, 3)
    assert unmasked.protocol == "full-unmasked"
    assert unmasked.metrics["hr@1"] == pytest.approx(0.5)
    assert unmasked.metrics["ndcg@5"] == pytest.approx((1 + 1 / math.log2(5)) / 2)


def test_unknown_protocol_lists_the_valid_ones(data):
    ds, split = data
    with pytest.raises(ValueError, match="valid: full, full-unmasked, sampled"):
        evaluate(FixedScores([0.0] * 5), ds, split, "ranked", "test")


class ParityScores(torch.nn.Module):
    """Even users rank their held-out item (candidate column 0) first, odd users last."""

    family = "parity"

    def score(self, users: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
        s = -torch.arange(cand.shape[1], dtype=torch.float32).expand(len(users), -1).clone()
        return torch.where((users % 2 == 0)[:, None], s, -s)


def test_sampled_per_user_values_line_up_with_their_users():
    from recfunnel.eval.protocols import evaluate_sampled

    n_users = 9
    frame = pl.DataFrame(
        {
            "user": [u for u in range(n_users) for _ in range(5)],
            "item": [(u + j) % 12 for u in range(n_users) for j in range(5)],
            "timestamp": [j for _ in range(n_users) for j in range(5)],
        }
    )
    ds = build_dataset("parity", frame)
    split = leave_one_out(ds).with_negatives(ds, n=4, seed=0)
    res = evaluate_sampled(ParityScores(), ds, split, "test", ks=(1, 5), per_user=True)
    ndcg = res.per_user["ndcg@5"]
    for user, value in zip(res.users.tolist(), ndcg.tolist(), strict=True):
        assert value == (1.0 if user % 2 == 0 else pytest.approx(1 / math.log2(6))), user
