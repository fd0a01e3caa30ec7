"""The HTTP service (issue 13) over a small bundle built on synthetic data: routes, freshness from
the event store, request validation (4xx with a reason, never a crash), admin key, atomic reload
under load, and the multi-process server started as a real command."""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from recfunnel.serve.app import ADMIN_KEY_ENV, ServiceSettings, create_app
from recfunnel.serve.schemas import Limits


@pytest.fixture()
def client(bundles, tmp_path, monkeypatch):
    monkeypatch.setenv(ADMIN_KEY_ENV, "secret")
    settings = ServiceSettings(bundle=bundles[0], events=str(tmp_path / "events.db"), limits=Limits(max_k=50))
    with TestClient(create_app(settings)) as c:
        yield c


def test_health_ready_docs_metrics(client):
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready").json()
    assert ready["status"] == "ready" and len(ready["bundle_id"]) == 16
    assert client.get("/docs").status_code == 200
    assert "/recommend" in client.get("/openapi.json").json()["paths"]
    client.post("/recommend", json={"user_id": "u01", "k": 5})
    text = client.get("/metrics").text
    assert 'recfunnel_requests_total{route="/recommend",status="200"}' in text
    assert 'recfunnel_stage_seconds_count{stage="rank"}' in text


def test_recommend_known_recent_and_nobody(client):
    for body in ({"user_id": "u01"}, {"recent_items": ["i01", "i02"]}, {}, {"user_id": "stranger"}):
        res = client.post("/recommend", json={**body, "k": 7, "explain": True})
        assert res.status_code == 200, res.text
        out = res.json()
        assert len(out["items"]) == 7 and all(i["sources"] for i in out["items"])
        assert {"resolve", "rank", "total"} <= set(out["timings_ms"])
    assert client.post("/recommend", json={"user_id": "stranger"}).json()["known_user"] is False


def test_events_reach_the_next_recommendation(client):
    before = client.post("/recommend", json={"user_id": "u05", "k": 10}).json()
    fresh = [it["item"] for it in before["items"][:3]]
    ack = client.post("/events", json={"events": [{"user": "u05", "item": i} for i in fresh]})
    assert ack.status_code == 200 and ack.json()["stored"] == 3
    after = client.post("/recommend", json={"user_id": "u05", "k": 10}).json()
    assert after["fresh_events"] == 3
    assert not set(fresh) & {it["item"] for it in after["items"]}  # now seen: filtered
    assert client.post("/events", json={"events": [{"user": "new-user", "item": "i03"}]}).status_code == 200
    new = client.post("/recommend", json={"user_id": "new-user", "k": 5}).json()
    assert new["fresh_events"] == 1 and new["known_user"] is False
    assert "i03" not in {it["item"] for it in new["items"]}


def test_filters_exclude_and_similar(client):
    allowed = [f"i{x:02d}" for x in range(20)]
    out = client.post(
        "/recommend",
        json={"user_id": "u01", "k": 5, "filters": {"available": allowed + ["nope"]}, "exclude": ["i00"]},
    ).json()
    items = {it["item"] for it in out["items"]}
    assert items <= set(allowed) - {"i00"} and out["unknown_items"] == ["nope"]
    sim = client.post("/similar-items", json={"item_id": "i01", "k": 4})
    assert sim.status_code == 200 and len(sim.json()["items"]) == 4
    assert "i01" not in {it["item"] for it in sim.json()["items"]}
    assert client.post("/similar-items", json={"item_id": "zz"}).status_code == 404


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        (b"{not json", 422, "malformed JSON"),
        (b"[1, 2]", 422, "valid dictionary"),
        (json.dumps({"k": "ten"}).encode(), 422, "k:"),
        (json.dumps({"k": 0}).encode(), 422, "greater than or equal to 1"),
        (json.dumps({"k": 51}).encode(), 422, "limit of 50"),
        (json.dumps({"k": 5000}).encode(), 422, "less than or equal"),
        (json.dumps({"recent_items": ["i01"] * 1001}).encode(), 422, "at most 1000"),
        (json.dumps({"user_id": ""}).encode(), 422, "user_id"),
        (json.dumps({"colour": "red"}).encode(), 422, "Extra inputs"),
        (json.dumps({"diversity": 0.5}).encode(), 422, "mmr_model"),
        (json.dumps({"recent_items": [1, 2]}).encode(), 422, "recent_items.0"),
    ],
)
def test_bad_requests_get_a_reason(client, body, status, reason):
    res = client.post("/recommend", content=body, headers={"content-type": "application/json"})
    assert res.status_code == status, res.text
    assert reason in res.json()["error"]


def test_bad_events_and_oversized_bodies(client):
    bad = [
        {"events": []},
        {"events": [{"user": "u1"}]},
        {"events": [{"user": "u1", "item": "i1", "weight": -1}]},
        {"events": [{"user": "u1", "item": "i1", "timestamp": -5}]},
    ]
    for body in bad:
        res = client.post("/events", json=body)
        assert res.status_code == 422 and res.json()["error"], res.text
    huge = b'{"recent_items": ["' + b"x" * 10_000_000 + b'"]}'
    assert (
        client.post("/recommend", content=huge, headers={"content-type": "application/json"}).status_code
        == 413
    )

    def chunks():
        for _ in range(30):
            yield b" " * 50_000

    res = client.post("/recommend", content=chunks(), headers={"content-type": "application/json"})
    assert res.status_code == 413  # a chunked body is counted as it arrives


def test_memory_stays_bounded_under_bad_requests(client):
    for _ in range(200):
        client.post("/recommend", content=b"{bad", headers={"content-type": "application/json"})
    start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(500):
        client.post("/recommend", content=b'{"k": -1}', headers={"content-type": "application/json"})
        client.post("/recommend", content=b"\xff\xfe", headers={"content-type": "application/json"})
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - start) / 1024
    assert grown_mb < 50, grown_mb
    assert client.post("/recommend", json={"user_id": "u01"}).status_code == 200  # still serving


def test_admin_needs_the_key(client, bundles):
    assert client.post("/admin/reload").status_code == 401
    assert client.post("/admin/reload", headers={"X-API-Key": "wrong"}).status_code == 401
    res = client.post("/admin/reload", headers={"X-API-Key": "secret"}, json={"bundle": str(bundles[1])})
    assert res.status_code == 200, res.text
    assert (
        client.get("/ready").json()["bundle_id"]
        == res.json()["bundle_id"]
        != res.json()["previous_bundle_id"]
    )


def test_admin_disabled_without_a_key(bundles, tmp_path, monkeypatch):
    monkeypatch.delenv(ADMIN_KEY_ENV, raising=False)
    with TestClient(create_app(ServiceSettings(bundle=bundles[0]))) as c:
        res = c.post("/admin/reload", headers={"X-API-Key": "anything"})
        assert res.status_code == 403 and ADMIN_KEY_ENV in res.json()["error"]
        assert c.post("/events", json={"events": [{"user": "a", "item": "i01"}]}).status_code == 503


def test_reload_under_load_fails_no_request(client, bundles, tmp_path):
    """Threads recommend while the bundle is swapped back and forth and once to a broken bundle:
    every request answers 200 from one whole bundle; the broken one is refused and the previous
    bundle keeps serving."""
    ids = set()
    errors: list[str] = []
    stop = threading.Event()

    def hammer():
        while not stop.is_set():
            res = client.post("/recommend", json={"user_id": "u02", "k": 5})
            if res.status_code != 200 or len(res.json()["items"]) != 5:
                errors.append(res.text)
            else:
                ids.add(res.json()["bundle_id"])

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    key = {"X-API-Key": "secret"}
    seen = []
    for path in (bundles[1], bundles[0], bundles[1]):
        res = client.post("/admin/reload", headers=key, json={"bundle": str(path)})
        assert res.status_code == 200, res.text
        seen.append(res.json()["bundle_id"])
    broken = tmp_path / "broken"
    broken.mkdir()
    res = client.post("/admin/reload", headers=key, json={"bundle": str(broken)})
    assert res.status_code == 409 and "still serving" in res.json()["error"]
    time.sleep(0.3)
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert ids <= set(seen) and len(ids) >= 1
    assert client.get("/ready").json()["bundle_id"] == seen[-1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(port: int, proc: subprocess.Popen, timeout: float = 90) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(
                f"server exited with {proc.returncode}: {proc.stderr.read().decode()[-2000:]}"
            )
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError("server not ready in time")


@pytest.mark.slow
def test_two_worker_processes_share_the_port_and_the_store(bundles, tmp_path):
    """`recfunnel serve --workers 2`: two processes answer on one port; an event acknowledged by one
    is used by the other; SIGTERM of the parent stops both."""
    import httpx

    port = _free_port()
    env = {**os.environ, ADMIN_KEY_ENV: "secret", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom")}
    (tmp_path / "prom").mkdir()
    cmd = [
        sys.executable,
        "-m",
        "recfunnel.cli",
        "serve",
        str(bundles[0]),
        "--port",
        str(port),
        "--workers",
        "2",
    ]
    cmd += ["--events", str(tmp_path / "ev.db")]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_ready(port, proc)
        base = f"http://127.0.0.1:{port}"
        for i in range(40):  # a new connection each: the kernel spreads them over both processes
            with httpx.Client() as c:
                ack = c.post(f"{base}/events", json={"events": [{"user": "w", "item": f"i{i % 60:02d}"}]})
                assert ack.status_code == 200
        res = httpx.post(f"{base}/recommend", json={"user_id": "w", "k": 5}).json()
        assert res["fresh_events"] == 40  # whichever process answers sees every acknowledged event
        metrics = httpx.get(f"{base}/metrics").text
        line = next(
            x for x in metrics.splitlines() if x.startswith('recfunnel_requests_total{route="/events"')
        )
        assert float(line.split()[-1]) == 40  # summed over both workers
        children = subprocess.run(
            ["pgrep", "-P", str(proc.pid)], capture_output=True, text=True
        ).stdout.split()
        assert len(children) >= 2
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    time.sleep(0.5)
    for pid in children:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()


def test_freshness_through_redis(bundles, redis_url):
    """The same freshness with the Redis event store (a real redis-server)."""
    with TestClient(create_app(ServiceSettings(bundle=bundles[0], events=redis_url))) as c:
        before = c.post("/recommend", json={"user_id": "u07", "k": 10}).json()
        fresh = [it["item"] for it in before["items"][:4]]
        assert (
            c.post("/events", json={"events": [{"user": "u07", "item": i} for i in fresh]}).json()["stored"]
            == 4
        )
        after = c.post("/recommend", json={"user_id": "u07", "k": 10}).json()
        assert after["fresh_events"] == 4
        assert not set(fresh) & {it["item"] for it in after["items"]}
        assert [it["item"] for it in after["items"]] != [it["item"] for it in before["items"]]


@pytest.mark.slow
def test_kill_9_after_acknowledged_events_loses_none(bundles, tmp_path):
    """Events acknowledged by a service process survive its SIGKILL; a restarted service uses them."""
    import httpx

    from recfunnel.serve.events import open_event_store

    db = tmp_path / "ev.db"
    cmd = [sys.executable, "-m", "recfunnel.cli", "serve", str(bundles[0]), "--events", str(db)]
    port = _free_port()
    proc = subprocess.Popen([*cmd, "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    acked = []
    try:
        _wait_ready(port, proc)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as c:
            for i in range(25):
                res = c.post(
                    "/events", json={"events": [{"user": "k9", "item": f"i{i:02d}", "timestamp": 100 + i}]}
                )
                assert res.status_code == 200
                acked.append(f"i{i:02d}")
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # no shutdown of any kind
        proc.wait(timeout=30)
    with open_event_store(str(db)) as store:
        assert [e.item for e in store.recent(["k9"], 100)[0]] == acked
    port = _free_port()
    proc = subprocess.Popen([*cmd, "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_ready(port, proc)
        out = httpx.post(f"http://127.0.0.1:{port}/recommend", json={"user_id": "k9", "k": 5}).json()
        assert out["fresh_events"] == 25
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
