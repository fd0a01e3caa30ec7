"""Tests for recfunnel.data.fields: fitting on train only, encoding, histories without leakage."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from recfunnel.data.dataset import build_dataset
from recfunnel.data.fields import (
    PAD,
    UNK,
    Categorical,
    FieldBatch,
    FieldSchema,
    ItemHistory,
    MultiHot,
    Numeric,
    ctr_parts,
    encode_events,
    encode_rows,
    event_columns,
    fit_schema,
    movielens_fields,
)
from recfunnel.data.readers import load_dataset
from recfunnel.data.splits import temporal
from recfunnel.settings import has_dataset

needs_data = pytest.mark.skipif(not has_dataset("ml-100k"), reason="ml-100k not under the data root")


@pytest.fixture(scope="module")
def toy():
    """Three users, four items; user 1 has events with equal timestamps."""
    frame = pl.DataFrame(
        {
            "user": [1, 1, 1, 1, 1, 2, 2, 3],
            "item": [10, 11, 12, 13, 10, 11, 12, 13],
            "timestamp": [100, 200, 200, 300, 400, 150, 150, 500],
            "rating": [5, 3, 4, 1, 2, 4, 5, 3],
        }
    )
    users = pl.DataFrame(
        {"id": [1, 2, 3], "age": [20, 40, None], "gender": ["F", "M", "X"], "zip": ["12345", "12999", "9"]}
    )
    items = pl.DataFrame(
        {
            "id": [10, 11, 12, 13],
            "year": [1990, 1995, None, 1998],
            "genres": [["Drama"], ["Comedy", "Drama"], [], ["Horror"]],
        }
    )
    return build_dataset("toy", frame, user_features=users, item_features=items)


SPECS = (
    Categorical("user_id", "user", "id"),
    Categorical("item_id", "item", "id"),
    Categorical("gender", "user", "gender"),
    Categorical("zip", "user", "zip", prefix=2),
    Categorical("age", "user", "age", buckets=(18.0, 30.0)),
    MultiHot("genres", "item", "genres"),
    Numeric("year", "item", "year"),
    Categorical("hour", "event", "hour"),
    ItemHistory("history", shares="item_id", max_len=3),
)


def test_vocabularies_are_fitted_on_train_rows_only(toy):
    train = np.array([0, 1, 2, 5])  # users 1 and 2, items 10, 11, 12; user 3 and item 13 unseen
    schema = fit_schema(SPECS, toy, train)
    assert schema["user_id"].vocab == ("1", "2")
    assert schema["item_id"].vocab == ("10", "11", "12")
    assert schema["gender"].vocab == ("F", "M")
    assert schema["genres"].vocab == ("Comedy", "Drama")
    batch = encode_rows(schema, toy, np.arange(8))
    assert batch["user_id"].tolist() == [2, 2, 2, 2, 2, 3, 3, UNK]
    assert batch["item_id"].tolist() == [2, 3, 4, UNK, 2, 3, 4, UNK]
    assert batch["gender"][-1] == UNK  # "X" only in user 3, never in train
    # the horror film's genre was never seen in train: UNK, padded
    assert batch["genres"][3].tolist() == [UNK, PAD]
    assert batch["genres"][1].tolist() == [2, 3]


def test_min_count_sends_rare_train_values_to_unknown(toy):
    schema = fit_schema([Categorical("item_id", "item", "id", min_count=2)], toy, np.arange(8))
    assert schema["item_id"].vocab == ("10", "11", "12", "13")
    schema = fit_schema([Categorical("item_id", "item", "id", min_count=3)], toy, np.arange(8))
    assert schema["item_id"].vocab == ()


def test_prefix_buckets_and_numeric_standardisation(toy):
    schema = fit_schema(SPECS, toy, np.array([0, 5, 7]))
    b = encode_rows(schema, toy, np.array([0, 5, 7]))
    assert schema["zip"].vocab == ("12", "9")
    assert b["zip"].tolist() == [2, 2, 3]
    # age 20 -> [18, 30) = bucket 1 (+2), 40 -> [30, inf) = bucket 2, null -> UNK
    assert b["age"].tolist() == [3, 4, UNK]
    assert schema["age"].decode(3) == "[18, 30)"
    years = np.array([1990.0, 1995.0, 1998.0])
    f = schema["year"]
    assert f.mean == pytest.approx(years.mean()) and f.std == pytest.approx(years.std())
    np.testing.assert_allclose(b["year"].numpy(), (years - years.mean()) / years.std(), rtol=1e-5)
    null_year = encode_rows(schema, toy, np.array([2]))  # item 12 has no year
    assert null_year["year"].tolist() == [0.0]


def test_event_columns_are_utc_hour_and_weekday():
    ts = np.array([0, 3600 * 13 + 59, 86400 * 4, 1_700_000_000])  # 1970-01-01 was a Thursday
    cols = event_columns(ts)
    assert cols["hour"].tolist() == [0, 13, 0, 22]
    assert cols["weekday"].tolist() == [3, 3, 0, _utc_weekday(1_700_000_000)]


def _utc_weekday(ts: int) -> int:
    import datetime as dt

    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).weekday()


def _naive_history(log_user, log_item, log_ts, log_order, u, t, width, code_of):
    rows = [
        (log_ts[j], log_order[j], code_of[log_item[j]])
        for j in range(len(log_user))
        if log_user[j] == u and log_ts[j] < t
    ]
    codes = [c for _, _, c in sorted(rows)][-width:]
    return [PAD] * (width - len(codes)) + codes


def test_history_is_strictly_earlier_and_ties_in_time_are_excluded(toy):
    schema = fit_schema(SPECS, toy, np.arange(8))
    h = encode_rows(schema, toy, np.arange(8))["history"].tolist()
    code = {i: 2 + i for i in range(4)}  # items 10..13 -> codes 2..5 (sorted vocabulary)
    assert h[0] == [PAD, PAD, PAD]  # first event of user 1
    assert h[1] == [PAD, PAD, code[0]]  # item 12 at the same time 200 is not "before"
    assert h[2] == [PAD, PAD, code[0]]
    assert h[3] == [code[0], code[1], code[2]]
    assert h[4] == [code[1], code[2], code[3]]  # last 3 of 4 earlier events, most recent last
    assert h[5] == h[6] == [PAD, PAD, PAD]  # user 2's two events share one timestamp


def test_history_matches_a_naive_scan_on_random_events_with_many_ties():
    rng = np.random.default_rng(0)
    n = 400
    frame = pl.DataFrame(
        {
            "user": rng.integers(0, 12, n),
            "item": rng.integers(0, 30, n),
            "timestamp": rng.integers(0, 25, n),  # many equal timestamps per user
            "rating": rng.integers(1, 6, n),
        }
    )
    ds = build_dataset("random", frame)
    schema = fit_schema([Categorical("item_id", "item", "id"), ItemHistory("h", max_len=5)], ds, np.arange(n))
    got = encode_rows(schema, ds, np.arange(n))["h"].numpy()
    ints = ds.interactions
    code_of = [schema["item_id"].vocab.index(raw) + 2 for raw in ds.items.ids]
    for r in range(n):
        want = _naive_history(
            ints.user, ints.item, ints.timestamp, ints.order, ints.user[r], ints.timestamp[r], 5, code_of
        )
        assert got[r].tolist() == want, r


def test_request_time_events_read_the_log_before_the_request(toy):
    schema = fit_schema(SPECS, toy, np.arange(8))
    b = encode_events(schema, toy, np.array([0, 0, -1]), np.array([3, -1, 0]), np.array([250, 10_000, 250]))
    assert b["history"][0].tolist() == [2, 3, 4]  # user 1 before 250: items 10, 11, 12
    assert b["history"][1].tolist() == [4, 5, 2]  # "now": the last three (12, 13, 10)
    assert b["history"][2].tolist() == [PAD] * 3  # an unknown user has no history
    assert b["user_id"][2] == UNK and b["gender"][2] == UNK
    assert b["item_id"][1] == UNK and b["genres"][1].tolist() == [PAD, PAD]


def test_history_must_share_an_item_id_field(toy):
    with pytest.raises(ValueError, match="shares"):
        fit_schema([ItemHistory("h", shares="item_id")], toy, np.arange(8))


def test_unknown_column_names_the_table_and_its_columns(toy):
    with pytest.raises(KeyError, match="occupation.*columns: id, age"):
        fit_schema([Categorical("occ", "user", "occupation")], toy, np.arange(8))


def test_schema_json_round_trip(toy):
    schema = fit_schema(SPECS, toy, np.arange(8))
    again = FieldSchema.from_json(schema.to_json())
    assert again == schema
    b1, b2 = encode_rows(schema, toy, np.arange(8)), encode_rows(again, toy, np.arange(8))
    for name in schema.names:
        assert torch.equal(b1[name], b2[name])


def test_field_batch_takes_rows_and_rejects_ragged_fields():
    b = FieldBatch({"a": torch.arange(5), "b": torch.arange(10).view(5, 2)})
    assert len(b) == 5
    sub = b.take(np.array([4, 0]))
    assert sub["a"].tolist() == [4, 0] and sub["b"].tolist() == [[8, 9], [0, 1]]
    assert len(b.take(slice(1, 3))) == 2
    with pytest.raises(ValueError, match="row counts"):
        FieldBatch({"a": torch.arange(5), "b": torch.arange(4)})


@needs_data
def test_movielens_ctr_parts_have_labels_fields_and_no_future_in_histories():
    ds = load_dataset("ml-100k")
    split = temporal(ds)
    schema, parts = ctr_parts(ds, split)
    expected = ["user_id", "item_id", "age", "gender", "occupation", "zip", "genres", "year", "hour"]
    assert list(schema.names[: len(expected)]) == expected
    assert {"weekday", "history", "age_value", "year_value"} <= set(schema.names)
    ints = ds.interactions
    for name, part in parts.items():
        rows = split.rows(name)
        assert len(part) == len(rows)
        assert torch.equal(part.labels, torch.from_numpy((ints.rating[rows] >= 4).astype(np.float32)))
        assert part.fields["history"].shape == (len(rows), 10)
    # every history item is an event of the same user strictly before the row (checked by time)
    test = parts["test"]
    code = {raw: c + 2 for c, raw in enumerate(schema["item_id"].vocab)}
    rows = split.rows("test")[:300]
    hist = test.fields["history"][:300].numpy()
    for r, h in zip(rows, hist, strict=True):
        earlier = (ints.user == ints.user[r]) & (ints.timestamp < ints.timestamp[r])
        allowed = {code.get(ds.items.ids[i], UNK) for i in ints.item[earlier]} | {PAD}
        assert set(h.tolist()) <= allowed
        assert (h != PAD).sum() == min(10, earlier.sum())


def test_movielens_fields_declare_the_issue_list():
    names = [s.name for s in movielens_fields(dense=False)]
    assert names == [
        "user_id",
        "item_id",
        "age",
        "gender",
        "occupation",
        "zip",
        "genres",
        "year",
        "hour",
        "weekday",
        "history",
    ]


def test_movielens_tower_fields_are_the_ctr_declarations_without_event_time_or_dense_fields():
    from recfunnel.data import movielens

    tower = movielens.movielens_tower_fields(zip_prefix=3, history_len=7)
    ctr = movielens.movielens_fields(zip_prefix=3, history=7, dense=False)
    assert tower == tuple(s for s in ctr if not (isinstance(s, Categorical) and s.source == "event"))
    assert [s.name for s in tower][-1] == "history" and tower[-1].max_len == 7
    # one place for the MovieLens task: the fields package re-exports the same objects
    import recfunnel.data.fields as fields

    assert fields.ML_AGE_EDGES is movielens.ML_AGE_EDGES and fields.movielens_fields is movielens_fields


def test_null_lists_and_null_elements_of_a_multi_hot_column_are_skipped():
    frame = pl.DataFrame({"user": [1, 1, 1, 1], "item": [1, 2, 3, 4], "timestamp": [1, 2, 3, 4]})
    items = pl.DataFrame({"id": [1, 2, 3, 4], "g": [["a", None, "b"], None, [], ["b"]]})
    ds = build_dataset("lists", frame, item_features=items)
    schema = fit_schema([MultiHot("g", "item", "g")], ds, np.arange(4))
    assert schema["g"].vocab == ("a", "b")
    assert encode_rows(schema, ds, np.arange(4))["g"].tolist() == [[2, 3], [PAD, PAD], [PAD, PAD], [3, PAD]]


def test_a_count_of_buckets_cuts_at_train_quantiles(toy):
    schema = fit_schema([Categorical("year_q", "item", "year", buckets=2)], toy, np.arange(8))
    f = schema["year_q"]
    years = np.array([1990, 1995, np.nan, 1998, 1990, 1995, np.nan, 1998])  # items of the 8 rows
    assert f.edges == (float(np.nanmedian(years)),) and f.cardinality == 4
    codes = encode_rows(schema, toy, np.arange(8))["year_q"].tolist()
    assert codes == [2, 3, UNK, 3, 2, 3, UNK, 3]


def test_an_event_encoder_reused_across_calls_matches_fresh_encodings(toy, monkeypatch):
    """The encoder gathers from table encodings made once; each call equals a fresh encoding of the
    same events (unknown ids -1 included, histories from the log or from `recent`), and the second
    call reads no table column again."""
    from recfunnel.data.fields import EventEncoder
    from recfunnel.data.fields import encode as enc

    schema = fit_schema(SPECS, toy, np.arange(len(toy.interactions)))
    fresh = {}
    calls = [
        (np.array([0, 1, 2, -1]), np.array([3, -1, 0, 1]), np.array([250, 450, 600, 300]), None),
        (
            np.array([1, 1]),
            np.array([0, 2]),
            np.array([201, 201]),
            (np.array([0, 2, 3]), np.array([3, 1, 0])),
        ),
    ]
    for i, (u, it, t, recent) in enumerate(calls):
        fresh[i] = encode_events(schema, toy, u, it, t, recent=recent)
    encoder = EventEncoder(schema, toy)
    first = encoder.encode(*calls[0][:3], recent=calls[0][3])
    read, original = [], enc.scalar_values
    monkeypatch.setattr(enc, "scalar_values", lambda *a: read.append(a[1].name) or original(*a))
    for i, (u, it, t, recent) in enumerate(calls):
        got = encoder.encode(u, it, t, recent=recent) if i else first
        for name in schema.names:
            assert torch.equal(got[name], fresh[i][name]), name
    assert set(read) <= {"hour"}  # only the event's own field is computed per call
