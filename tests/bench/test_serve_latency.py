"""The serve-latency suite (issue 13): the load generator's open loop counts queueing (no
coordinated omission) against a stub server, the metrics scrape arithmetic, and a CI-sized run of
the suite on a tiny synthetic catalogue served by ``recfunnel serve`` with two workers."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
from collections.abc import Iterator

import pytest

from recfunnel.bench.loadgen import LoadSpec, run_load
from recfunnel.bench.rows import ROW_CONTRACT
from recfunnel.bench.serve_latency import run_serve_latency_suite, stage_means
from recfunnel.bench.suites import SUITES, run_suite
from recfunnel.bench.synthetic_bundle import TINY, build_synthetic_bundle, index_key, synthetic_dataset
from recfunnel.funnel.bundle import load_bundle

SERVICE_MS = 40  # the stub's time per request


@pytest.fixture(scope="module")
def stub() -> Iterator[int]:
    """An HTTP/1.1 keep-alive server on 127.0.0.1 answering every request after SERVICE_MS, one
    request at a time per connection; -> its port."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(x.split(b":")[1])
                    for x in head.split(b"\r\n")
                    if x.lower().startswith(b"content-length")
                )
                await reader.readexactly(length)
                await asyncio.sleep(SERVICE_MS / 1000)
                body = b'{"ok": true}'
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(asyncio.start_server(handle, "127.0.0.1", 0))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield server.sockets[0].getsockname()[1]
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    server.close()
    loop.run_until_complete(server.wait_closed())
    loop.close()


def _spec(port: int, **kwargs) -> LoadSpec:
    bodies = {"/recommend": [json.dumps({"user_id": str(u)}) for u in range(5)]}
    return LoadSpec("127.0.0.1", port, bodies=bodies, **kwargs)


def test_open_loop_counts_the_queue_and_closed_loop_saturates(stub):
    # one connection that serves 25 requests/s, offered 50/s for 1 s: the backlog grows, so the
    # late requests wait ~0.5 s more than they take; measured from the send, they would not
    over = run_load(_spec(stub, mode="open", duration_s=1.0, rate=50, concurrency=1, grace_s=5))
    rec = over["endpoints"]["/recommend"]
    assert rec["sent"] == rec["ok"] == 50 and over["all"]["errors"] == 0
    assert rec["p50_ms"] > 5 * SERVICE_MS and rec["max_ms"] > 0.8 * 50 * SERVICE_MS - 1000
    assert over["send_lag_ms"]["max"] > 500
    assert over["client_cpu_s"] >= 0 and 0 <= over["client_cpu_share"] < 1
    # under capacity (10/s on 4 connections) every request takes about the service time
    under = run_load(_spec(stub, mode="open", duration_s=1.0, rate=10, concurrency=4))
    assert SERVICE_MS <= under["endpoints"]["/recommend"]["p50_ms"] < 3 * SERVICE_MS
    closed = run_load(_spec(stub, mode="closed", duration_s=1.0, concurrency=2))
    rps = closed["all"]["achieved_rps"]
    assert 0.5 * 2000 / SERVICE_MS < rps <= 1.05 * 2000 / SERVICE_MS, rps  # 2 connections x 25/s


def test_open_loop_counts_unanswered_requests_as_errors(stub):
    # 60/s for 1 s on one connection (25/s) with 0.2 s of grace: the tail is never sent
    res = run_load(_spec(stub, mode="open", duration_s=1.0, rate=60, concurrency=1, grace_s=0.2))
    rec = res["endpoints"]["/recommend"]
    assert rec["errors"] > 0 and rec["ok"] + rec["errors"] == 60
    assert rec["censored"] == rec["errors"] and set(rec["status"]) >= {"200", "unsent"}


def test_stage_means_are_differences_of_sums_over_counts():
    before = {
        ("recfunnel_stage_seconds_sum", 'stage="rank"'): 1.0,
        ("recfunnel_stage_seconds_count", 'stage="rank"'): 10,
    }
    after = {
        ("recfunnel_stage_seconds_sum", 'stage="rank"'): 1.5,
        ("recfunnel_stage_seconds_count", 'stage="rank"'): 20,
    }
    assert stage_means(before, after) == pytest.approx({"rank": 50.0})


def test_the_synthetic_catalogue_is_clustered_and_sized():
    data = synthetic_dataset(TINY)
    ds = data.dataset
    assert ds.n_items == TINY.n_items and ds.n_users == TINY.n_users
    assert data.item_vectors.shape == (TINY.n_items, TINY.dim)
    assert set(ds.item_features.columns) == {"id", "genres"}
    assert len(ds.interactions) >= TINY.n_users * 4 and ds.has_time


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("serve-latency")


@pytest.fixture(scope="module")
def quick_rows(tiny_cache):
    return run_serve_latency_suite(
        quick=True, progress=False, cache=tiny_cache, open_seconds=2.0, closed_seconds=2.0
    )


def test_a_changed_quota_rebuilds_the_ranker_but_reuses_the_index(quick_rows, tiny_cache):
    """The quick run cached TINY's bundle; TINY with another popular quota is a new bundle whose
    HNSW index is the cached one (same vectors, same graph settings), checked against its model."""
    other = dataclasses.replace(TINY, popular_quota=TINY.popular_quota + 5)
    assert index_key(dataclasses.asdict(other)) == index_key(dataclasses.asdict(TINY))
    assert index_key(dataclasses.asdict(dataclasses.replace(TINY, hnsw_m=8))) != index_key(
        dataclasses.asdict(TINY)
    )
    bundle, info = build_synthetic_bundle(other, tiny_cache)
    assert info["index_reused_from"] is not None and f"{TINY.name}-{TINY.key()}" in info["index_reused_from"]
    assert "retrievers" in info["seconds"] or "funnel.retrievers" in info["seconds"]
    funnel = load_bundle(bundle).funnel  # loads: the reused index matches the bundle's MF vectors
    assert funnel.quotas == [TINY.ann_quota, TINY.popular_quota + 5]


STAGES = {"resolve", "retrieve.ann", "retrieve.popular", "merge", "rank", "filter", "order", "total"}
STAGES |= {"retrieve.ann.user_vector", "retrieve.ann.search"}


def test_quick_rows_follow_the_contract_with_zero_errors(quick_rows):
    assert [r["protocol"] for r in quick_rows] == ["open-50rps", "open-50rps+10%events", "closed-c8"]
    for r in quick_rows:
        assert ROW_CONTRACT <= set(r), ROW_CONTRACT - set(r)
        assert r["suite"] == "serve-latency" and r["model"] == "synthetic-2k" and r["quick"] is True
        m = r["metrics"]
        assert m["errors"] == 0 and m["ok"] == m["sent"] > 0
        assert 0 < m["p50_ms"] <= m["p95_ms"] <= m["p99_ms"] <= m["max_ms"]
        assert m["achieved_rps"] > 0 and m["client_cpu_s"] >= 0
        assert set(r["stage_ms"]) == STAGES and all(v >= 0 for v in r["stage_ms"].values())
        assert m["request_mean_ms"] >= r["stage_ms"]["total"] * 0.9
        assert r["bundle"]["n_items"] == TINY.n_items and r["bundle"]["quotas"] == [150, 50]
        assert r["server_cpu_s"] > 0 and r["peak_rss_mb"] > 0 and r["params"] > 0
        assert 1.0 <= m["mean_batch"] <= 16  # micro-batching on (the service's default --max-batch)
        assert r["bundle"]["ranker_precision"] in ("fp32", "bf16")
        agreement = r["bundle"]["bf16_agreement"]
        assert (agreement is None) == (r["bundle"]["ranker_precision"] == "fp32")
        assert agreement is None or 0.0 <= agreement["same_order"] <= agreement["top10_overlap"] <= 1.0
        assert json.loads(json.dumps(r)) == r  # plain JSON (no NaN)
    open_rows = [r for r in quick_rows if r["protocol"].startswith("open")]
    for r in open_rows:
        assert set(r["bar"]) == {"p99_limit_ms", "p99_ok", "all_served", "zero_errors", "met"}
        assert r["bar"]["all_served"] and r["bar"]["zero_errors"]
        assert r["metrics"]["sent"] + r["endpoints"].get("/events", {}).get("sent", 0) == 100
    mixed = quick_rows[1]["endpoints"]
    assert mixed["/events"]["ok"] > 0 and mixed["/events"]["errors"] == 0


def test_registered_and_unknown_catalogues_are_refused():
    assert "serve-latency" in SUITES
    with pytest.raises(ValueError, match="synthetic-2k"):
        run_suite("serve-latency", quick=True, models=["nope"], progress=False)
