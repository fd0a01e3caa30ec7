"""Vocabularies: raw ids (strings) <-> contiguous indices 0..n-1, with an explicit unknown id."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

#: Index returned for a raw id the vocabulary does not hold (when asked not to raise).
UNKNOWN = -1


@dataclass(frozen=True)
class Vocab:
    """An immutable mapping of raw ids to indices ``0..len-1`` (in the order given) and back.

    Raw ids are kept as strings so ids from any file format compare equal ("42" from a CSV and
    42 from Parquet are the same id). Unknown raw ids encode to :data:`UNKNOWN` or raise.
    """

    ids: tuple[str, ...]
    name: str = "id"
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index = {raw: i for i, raw in enumerate(self.ids)}
        if len(index) != len(self.ids):
            raise ValueError(f"vocabulary {self.name!r} holds duplicate ids")
        object.__setattr__(self, "_index", index)

    @classmethod
    def from_values(cls, values: Iterable[object], name: str = "id") -> Vocab:
        """Build from raw values in order of first appearance (duplicates collapse)."""
        seen = dict.fromkeys(str(v) for v in values)
        return cls(tuple(seen), name=name)

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, raw: object) -> bool:
        return str(raw) in self._index

    def index(self, raw: object) -> int:
        """Index of one raw id; KeyError naming the vocabulary if absent."""
        try:
            return self._index[str(raw)]
        except KeyError:
            raise KeyError(f"unknown {self.name} {raw!r} (vocabulary holds {len(self)} ids)") from None

    def encode(self, raws: Sequence[object], unknown: str = "raise") -> np.ndarray:
        """Indices of raw ids as int64. `unknown`: "raise" (KeyError) or "mark" (-> UNKNOWN)."""
        if unknown not in ("raise", "mark"):
            raise ValueError("unknown must be 'raise' or 'mark'")
        get = self._index.get
        out = np.fromiter((get(str(r), UNKNOWN) for r in raws), dtype=np.int64, count=len(raws))
        if unknown == "raise" and (out == UNKNOWN).any():
            bad = [r for r, i in zip(raws, out, strict=True) if i == UNKNOWN][:5]
            raise KeyError(f"unknown {self.name} id(s) {bad} (vocabulary holds {len(self)} ids)")
        return out

    def decode(self, indices: Sequence[int] | np.ndarray) -> list[str]:
        """Raw ids for indices; UNKNOWN decodes to '<unknown>'."""
        idx = np.asarray(indices, dtype=np.int64)
        if ((idx < UNKNOWN) | (idx >= len(self.ids))).any():
            raise IndexError(
                f"{self.name} index out of range 0..{len(self.ids) - 1} (or {UNKNOWN} for unknown)"
            )
        return [self.ids[i] if i != UNKNOWN else "<unknown>" for i in idx.tolist()]

    def to_json(self) -> str:
        return json.dumps(list(self.ids))

    @classmethod
    def from_json(cls, text: str, name: str = "id") -> Vocab:
        ids = json.loads(text)
        if not isinstance(ids, list) or not all(isinstance(x, str) for x in ids):
            raise ValueError(f"vocabulary {name!r}: expected a JSON list of strings")
        return cls(tuple(ids), name=name)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()
