"""The recommendation funnel: retrieve candidates from several sources, merge them with quotas,
rank them, filter and diversify, for a batch of requests at once (DESIGN.md, "The funnel and the
service").

    funnel = Funnel.for_dataset(
        [ANNRetriever(mf), ItemToItemRetriever.from_model(mf), PopularityRetriever(log, n_items)],
        quotas=[200, 50, 50], ranker=ScorerRanker.from_model(deepfm, dataset, split),
        filters=Filters(available=in_stock, rules=[no_adult_content]),
        dataset=dataset, split=split,
    )
    res = funnel.recommend(users=["196", None, None], recent_items=[[], ["242"], []], k=10)

From a config: ``build_funnel(FunnelConfig.from_toml(path))`` fits the models through the run layer
and trains the ranker; ``save_bundle`` writes one checked folder and ``Funnel.load`` reads it back.

Modules: :mod:`.config`, :mod:`.build`, :mod:`.bundle`, :mod:`.evaluate`,
:mod:`.request` (resolving ids into :class:`Requests`), :mod:`.candidates`
(:class:`Candidates`), :mod:`.retrievers`, :mod:`.merge`, :mod:`.ranker` (the ranking stage),
:mod:`.ranker_data` (hard-negative training rows for a funnel ranker), :mod:`.filters` (filters and
MMR), :mod:`.funnel` (:class:`Funnel`, :class:`FunnelResult`).
"""

from recfunnel.funnel.build import BuiltFunnel, build_funnel, evaluate_built
from recfunnel.funnel.bundle import Bundle, BundleError, load_bundle, save_bundle
from recfunnel.funnel.candidates import Candidates
from recfunnel.funnel.config import FilterSpec, FunnelConfig, ModelSpec, RankerSpec, RetrieverSpec
from recfunnel.funnel.evaluate import FunnelEval, evaluate_funnel
from recfunnel.funnel.filters import BusinessRule, Filters, mmr
from recfunnel.funnel.funnel import Funnel, FunnelResult
from recfunnel.funnel.merge import fetch_sizes, merge
from recfunnel.funnel.ranker import Ranker, RetrievalScoreRanker, ScorerRanker
from recfunnel.funnel.ranker_data import (
    RankerDataConfig,
    mine_negatives,
    ranker_parts,
    ranker_rows,
    train_ranker,
)
from recfunnel.funnel.request import Requests, resolve_requests
from recfunnel.funnel.retrievers import (
    ANNRetriever,
    ItemToItemRetriever,
    PopularityRetriever,
    Retriever,
)

__all__ = [
    "BuiltFunnel",
    "Bundle",
    "BundleError",
    "FilterSpec",
    "FunnelConfig",
    "ModelSpec",
    "RankerSpec",
    "RetrieverSpec",
    "build_funnel",
    "evaluate_built",
    "load_bundle",
    "save_bundle",
    "ANNRetriever",
    "BusinessRule",
    "Candidates",
    "Filters",
    "Funnel",
    "FunnelEval",
    "FunnelResult",
    "ItemToItemRetriever",
    "PopularityRetriever",
    "RankerDataConfig",
    "Ranker",
    "Requests",
    "RetrievalScoreRanker",
    "Retriever",
    "ScorerRanker",
    "evaluate_funnel",
    "fetch_sizes",
    "merge",
    "mine_negatives",
    "mmr",
    "ranker_parts",
    "ranker_rows",
    "resolve_requests",
    "train_ranker",
]
