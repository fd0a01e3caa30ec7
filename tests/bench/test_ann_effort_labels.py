"""The ann suite labels each row with the effort it measured (issue 14, item 6): `metrics` at the row's
nprobe / ef_search only (one pass, short queries count their empty places as misses), and what the
default widening search serves reported beside it, with how often it fired and at what effort."""

from __future__ import annotations

import numpy as np

from recfunnel.bench import ann
from recfunnel.bench.ann import QUICK_SWEEPS, VectorSet, run_ann_suite
from recfunnel.index import INDEXES, recall_at_k


def test_rows_measure_their_own_effort_and_report_widening_beside_it(monkeypatch):
    rng = np.random.default_rng(5)
    # 400 items in 40 IVF cells of ~10: a k=100 search at nprobe 4 comes back short
    monkeypatch.setitem(ann.BUILD_PARAMS, "ivf", {"nlist": 40})
    vs = VectorSet(
        "small",
        rng.standard_normal((400, 8)).astype(np.float32),
        rng.standard_normal((40, 8)).astype(np.float32),
    )
    rows = run_ann_suite(quick=True, progress=False, vectors={"small": vs}, models=["ivf", "hnsw"], sets=[])
    ivf = [r for r in rows if r["backend"] == "ivf"]
    assert [r["search_param"]["nprobe"] for r in ivf] == list(QUICK_SWEEPS["ivf"][1])
    exact = INDEXES["exact"]().build(vs.items)
    truth, _ = exact.search(vs.queries, 100)
    for r in ivf:
        index = INDEXES["ivf"](**r["params"]).build(vs.items)
        index.set_params(nprobe=r["search_param"]["nprobe"])
        one_pass, _ = index.search(vs.queries, 100, widen=False)
        assert r["metrics"]["recall@100"] == recall_at_k(one_pass, truth, 100)
        served, used = r["served"], r["served"]["nprobe_used@100"]
        assert served["recall@100"] >= r["metrics"]["recall@100"]
        configured = min(r["search_param"]["nprobe"], r["params"]["nlist"])
        assert used["min"] >= configured
        assert (used["max"] > configured) == (r["widened_queries"]["k100"] > 0)
    assert ivf[0]["widened_queries"]["k100"] > 0  # the case the rows used to mislabel
    assert ivf[0]["metrics"]["recall@100"] <= ivf[1]["metrics"]["recall@100"]
    for r in rows:
        if r["backend"] == "hnsw":  # HNSW explores max(ef_search, k) candidates
            assert r["served"]["ef_search_used@100"]["min"] == max(r["search_param"]["ef_search"], 100)
