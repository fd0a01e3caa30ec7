"""A Result names its protocol, split, K values, dataset and seed beside every number."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Result:
    model: str
    dataset: str
    protocol: str  # "full" (all items, seen masked) or "sampled-99" (target vs 99 fixed negatives)
    split: str
    part: str  # "valid" or "test"
    ks: tuple[int, ...]
    seed: int
    n_users: int
    metrics: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ks"] = list(self.ks)
        return d

    def line(self, keys: tuple[str, ...] = ("hr", "ndcg")) -> str:
        parts = [f"{k}@{K}={self.metrics[f'{k}@{K}']:.4f}" for k in keys for K in self.ks]
        return f"{self.model} [{self.dataset}, {self.protocol}, {self.split}/{self.part}] " + " ".join(parts)
