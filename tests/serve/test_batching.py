"""Micro-batching of /recommend (recfunnel.serve.batching) and the ranker's serving precision:
batched answers equal the ones given alone, jobs of different keys never share a call, one failing
job fails only itself, and a bf16 ranker orders items as the fp32 one nearly always does."""

from __future__ import annotations

import asyncio
import dataclasses

import httpx
import numpy as np
import pytest
import torch

from recfunnel.errors import ConfigError
from recfunnel.funnel.bundle import load_bundle
from recfunnel.funnel.ranker import resolve_ranker_precision
from recfunnel.nn import MLP, set_mlp_dtype
from recfunnel.serve.app import ServiceSettings, create_app
from recfunnel.serve.batching import Batcher


def _recording_batcher(max_batch: int = 16, fail_on: int | None = None):
    calls: list[list[int]] = []

    def run(jobs):
        calls.append(list(jobs))
        if fail_on is not None and fail_on in jobs:
            raise ValueError(f"bad job {fail_on}")
        return [j * 10 for j in jobs]

    return Batcher(run, max_batch=max_batch), calls


def test_jobs_waiting_together_share_a_call_and_keep_their_results():
    batcher, calls = _recording_batcher()

    async def main():
        return await asyncio.gather(*(batcher.submit("k", j) for j in range(10)))

    assert asyncio.run(main()) == [j * 10 for j in range(10)]
    assert calls == [list(range(10))]  # one call, arrival order
    assert (batcher.calls, batcher.jobs) == (1, 10)


def test_keys_never_mix_and_max_batch_splits():
    batcher, calls = _recording_batcher(max_batch=3)

    async def main():
        return await asyncio.gather(*(batcher.submit(j % 2, j) for j in range(10)))

    assert asyncio.run(main()) == [j * 10 for j in range(10)]
    assert all(len(c) <= 3 for c in calls)
    assert all(len({j % 2 for j in c}) == 1 for c in calls)
    assert sorted(j for c in calls for j in c) == list(range(10))


def test_an_idle_batcher_answers_alone():
    batcher, calls = _recording_batcher()

    async def main():
        return [await batcher.submit("k", j) for j in range(3)]

    assert asyncio.run(main()) == [0, 10, 20]
    assert calls == [[0], [1], [2]]


def test_one_failing_job_fails_only_itself():
    batcher, _ = _recording_batcher(fail_on=3)

    async def main():
        return await asyncio.gather(*(batcher.submit("k", j) for j in range(6)), return_exceptions=True)

    out = asyncio.run(main())
    assert isinstance(out[3], ValueError) and "bad job 3" in str(out[3])
    assert [x for i, x in enumerate(out) if i != 3] == [0, 10, 20, 40, 50]


def test_max_batch_must_be_positive():
    with pytest.raises(ValueError, match="max_batch"):
        Batcher(lambda jobs: jobs, max_batch=0)


def _bodies() -> list[dict]:
    bodies: list[dict] = [{"user_id": f"u{u:02d}", "k": 7} for u in range(12)]
    bodies += [{"recent_items": ["i01", "i05", "i09"], "k": 7}, {"k": 7}, {"user_id": "stranger", "k": 7}]
    bodies += [{"user_id": "u03", "k": 4, "exclude": ["i10"]}, {"user_id": "u04", "k": 7, "explain": True}]
    return [{**b, "timestamp": 1_000_100} for b in bodies]


async def _answers(app, bodies: list[dict], concurrent: bool) -> list[dict]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        if concurrent:
            res = await asyncio.gather(*(client.post("/recommend", json=b) for b in bodies))
        else:
            res = [await client.post("/recommend", json=b) for b in bodies]
    assert all(r.status_code == 200 for r in res), [r.text for r in res if r.status_code != 200]
    return [r.json() for r in res]


def _comparable(answer: dict) -> dict:
    out = {k: v for k, v in answer.items() if k != "timings_ms"}
    out["items"] = [
        {
            **it,
            "score": round(it["score"], 4),
            "source_scores": {s: round(v, 4) for s, v in (it.get("source_scores") or {}).items()},
        }
        for it in answer["items"]
    ]
    return out


def test_batched_answers_equal_answers_given_alone(bundles, tmp_path):
    """The same requests, sent all at once to a batching app and one by one to an app that never
    batches, get the same items, scores and sources; the batching app did answer several per call."""
    settings = ServiceSettings(bundle=bundles[0], events=None, ranker_precision="fp32")
    alone = create_app(dataclasses.replace(settings, max_batch=1))
    batched = create_app(dataclasses.replace(settings, max_batch=8))
    bodies = _bodies()
    want = asyncio.run(_answers(alone, bodies, concurrent=False))
    got = asyncio.run(_answers(batched, bodies, concurrent=True))
    assert [_comparable(a) for a in got] == [_comparable(a) for a in want]
    b = batched.state.batcher
    assert b.jobs == len(bodies) and b.calls < b.jobs  # some calls answered several requests
    assert alone.state.batcher is None
    explained = got[-1]["timings_ms"]
    assert explained["batch"] >= 1 and explained["total"] > 0


def test_mlp_compute_dtype_round_trip():
    torch.manual_seed(0)
    mlp = MLP(12, (32, 16), 1).eval()
    x = torch.randn(50, 12)
    ref = mlp(x)
    assert set_mlp_dtype(torch.nn.Sequential(mlp), torch.bfloat16) == 1
    assert mlp.net[0].weight.dtype == torch.bfloat16
    low = mlp(x)
    assert low.dtype == torch.float32  # callers see float32
    assert torch.allclose(low, ref, atol=0.05, rtol=0.05) and not torch.equal(low, ref)
    set_mlp_dtype(mlp, None)
    assert mlp.net[0].weight.dtype == torch.float32


def test_ranker_precision_is_checked_and_resolved(monkeypatch):
    assert resolve_ranker_precision("fp32") == "fp32" and resolve_ranker_precision("bf16") == "bf16"
    monkeypatch.setattr("recfunnel.funnel.ranker._bf16_matmul_fast", lambda: True)
    assert resolve_ranker_precision("auto") == "bf16"
    monkeypatch.setattr("recfunnel.funnel.ranker._bf16_matmul_fast", lambda: False)
    assert resolve_ranker_precision("auto") == "fp32"
    with pytest.raises(ConfigError, match="fp32, bf16"):
        resolve_ranker_precision("fp16")


def test_bf16_ranker_orders_like_fp32(bundles):
    fp32 = load_bundle(bundles[0], ranker_precision="fp32").funnel
    bf16 = load_bundle(bundles[0], ranker_precision="bf16").funnel
    assert (fp32.ranker_precision, bf16.ranker_precision) == ("fp32", "bf16")
    users = list(fp32.user_vocab.ids)
    a = fp32.recommend(users=users, k=10, timestamp=1_000_100)
    b = bf16.recommend(users=users, k=10, timestamp=1_000_100)
    overlap = np.mean([len(set(x) & set(y)) / 10 for x, y in zip(a.items, b.items, strict=True)])
    assert overlap >= 0.9, overlap
    assert np.abs(a.scores - b.scores).max() < 0.1
