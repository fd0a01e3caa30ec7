"""ctr-deepctr: our DeepFM and deepctr-torch's on the same encoded rows, same architecture."""

import pytest

from recfunnel.bench.suites import ROW_CONTRACT, SUITES
from recfunnel.settings import has_dataset

pytest.importorskip("deepctr_torch")


def test_the_peer_sees_the_same_fields_and_tables():
    from deepctr_torch.inputs import DenseFeat, SparseFeat, VarLenSparseFeat

    from recfunnel.bench.ctr import ctr_data, encoded_parts
    from recfunnel.bench.ctr_peer import deepctr_inputs

    if not has_dataset("ml-100k"):
        pytest.skip("ml-100k not under the data root")
    ds, split = ctr_data(quick=True)
    schema, _ = encoded_parts(ds, split)
    columns = {c.name: c for c in deepctr_inputs(schema)}
    assert list(columns) == list(schema.names)
    for f in schema:
        c = columns[f.name]
        if f.kind == "numeric":
            assert isinstance(c, DenseFeat)
        elif f.kind == "categorical":
            assert isinstance(c, SparseFeat) and c.vocabulary_size == f.cardinality
        else:
            assert isinstance(c, VarLenSparseFeat) and c.maxlen == f.max_len and c.combiner == "mean"
    history = columns["history"]
    assert history.embedding_name == "item_id" and history.vocabulary_size == schema["item_id"].cardinality


@pytest.mark.skipif(not has_dataset("ml-100k"), reason="ml-100k not under the data root")
def test_quick_row_reports_both_throughputs_and_aucs():
    (row,) = SUITES["ctr-deepctr"](quick=True, progress=False)
    assert ROW_CONTRACT <= set(row) and row["params"] > 0
    c = row["comparison"]
    assert c["ours_samples_per_second"] > 0 and c["deepctr_samples_per_second"] > 0
    ratio = c["ours_samples_per_second"] / c["deepctr_samples_per_second"]
    assert c["ratio_ours_over_deepctr"] == pytest.approx(ratio)
    assert 0.5 < c["ours_test_auc"] < 1 and 0.5 < c["deepctr_test_auc"] < 1
    assert row["metrics"]["auc"] == c["ours_test_auc"]
