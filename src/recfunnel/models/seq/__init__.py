"""Sequence models (GRU4Rec, SASRec); importing this package registers them."""

from recfunnel.models.seq import gru4rec, sasrec  # noqa: F401
from recfunnel.models.seq.gru4rec import GRU4Rec, GRU4RecConfig
from recfunnel.models.seq.sasrec import SASRec, SASRecConfig
from recfunnel.models.seq.sequential import SequenceModel

__all__ = ["GRU4Rec", "GRU4RecConfig", "SASRec", "SASRecConfig", "SequenceModel"]
