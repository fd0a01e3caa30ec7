"""Benchmark suite ``serve-latency`` (issue 13): the HTTP service under load, on two catalogues.

Per catalogue (the MovieLens-100K bundle of ``examples/funnel-ml100k.toml``, and the synthetic
1,000,000-item bundle of :mod:`recfunnel.bench.synthetic_bundle`; ``quick``: one tiny synthetic
catalogue), both built once and cached under `cache`:

1. ``recfunnel serve BUNDLE --workers 2 --events <tmp>.db`` starts on 127.0.0.1 (a subprocess; the
   suite waits for ``/ready`` and for every worker's socket, and stops it by its process id at the
   end, whatever happens);
2. after a short unrecorded warm-up, three loads from the load generator in its own process
   (:mod:`recfunnel.bench.loadgen`): (a) open loop at 300 requests/s for 30 s of ``/recommend``
   (k=10; 90% known users, 10% anonymous visitors with 3-5 recent items), (b) the same with 10% of
   the requests ``POST /events`` (one event of a known user), (c) closed loop at concurrency 8 for
   20 s (saturation throughput);
3. around each load ``/metrics`` is scraped: the mean of every ``recfunnel_stage_seconds`` stage and
   of ``recfunnel_request_seconds`` over the load (sum / count differences), so the row splits the
   time into funnel stages (the whole funnel call a request was answered by), the service's own
   overhead (request mean minus the funnel's total: FastAPI, validation, event-store read, the
   response, and waiting for the funnel call in progress when micro-batching) and what lies outside
   the handler (client latency minus the request mean: queueing, HTTP, loopback); the funnel's CPU
   per request is its total divided by ``mean_batch`` (``funnel_ms_per_request``), and the service
   processes' CPU per answered request is ``server_cpu_ms_per_request``.

The service runs with its defaults: micro-batching of ``/recommend`` (``--max-batch 16``: requests
waiting together share one funnel call; ``mean_batch`` in each row) and the ranker's MLP layers in
bf16 where the CPU has AMX (``--ranker-precision auto``; the bundle row records what was applied,
and ``bf16_agreement``, the top-10 overlap of bf16 and fp32 rankings on 300 stored users). Full
runs serve each catalogue a second time with ``--max-batch 1`` for the open- and closed-loop loads
(rows ``... max-batch-1``): batching's effect side by side in one run.

One row per (catalogue, load), following :data:`recfunnel.bench.rows.ROW_CONTRACT`: ``model`` is
the catalogue, ``protocol`` the load; ``metrics`` hold ``/recommend``'s p50/p95/p99/max/mean ms,
achieved and offered requests per second, sent / ok / errors, the overheads and the client's CPU
seconds; ``stage_ms`` the stage means; ``endpoints`` every endpoint's figures; ``server_cpu_s`` the
service processes' CPU over the load; ``bar`` (open-loop rows) the issue's target: p99 <= 25 ms
with every offered request answered and no error. Open-loop percentiles count a request that was
never answered (or never sent) with the time it had waited when the run ended, a lower bound.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from recfunnel.bench.loadgen import LoadSpec, run_load_process
from recfunnel.bench.rows import machine_info, param_count, utc_now
from recfunnel.bench.serve_catalogues import (
    CATALOGUES,
    DEFAULT_CACHE,
    QUICK_CATALOGUES,
    Log,
    bf16_agreement,
    catalogue_bundle,
    request_bodies,
)
from recfunnel.funnel.bundle import read_bundle_manifest
from recfunnel.run.artifact import load_model

__all__ = ["CATALOGUES", "run_serve_latency_suite", "scrape_metrics", "stage_means"]

SUITE = "serve-latency"
P99_BAR_MS = 25.0


# --------------------------------------------------------------------------------------------------
# the service process


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(port: int, path: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
        return r.read()


def _listeners(port: int) -> int:
    """Listening TCP sockets on `port` (each worker binds its own with SO_REUSEPORT)."""
    n = 0
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        n += sum(1 for x in lines if x.split()[1].endswith(f":{port:04X}") and x.split()[3] == "0A")
    return n


def _workers(pid: int) -> tuple[float, float]:
    """(CPU seconds, sum of peak RSS in MB) of the processes `pid` started (the service workers)."""
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return 0.0, 0.0
    ticks, rss = 0, 0.0
    for kid in kids:
        try:
            stat = Path(f"/proc/{kid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(stat[11]) + int(stat[12])  # utime, stime
            hwm = [x for x in Path(f"/proc/{kid}/status").read_text().splitlines() if x.startswith("VmHWM:")]
            rss += int(hwm[0].split()[1]) / 1024 if hwm else 0.0
        except (OSError, IndexError, ValueError):
            pass
    return ticks / os.sysconf("SC_CLK_TCK"), rss


@contextmanager
def service(
    bundle: Path, workers: int, log: Log, env: dict[str, str] | None = None, args: Sequence[str] = ()
) -> Iterator[dict]:
    """``recfunnel serve`` on a free port of 127.0.0.1 until the block ends (then stopped by pid);
    `args`: more ``recfunnel serve`` options (e.g. ``--max-batch 1``)."""
    with tempfile.TemporaryDirectory(prefix="recfunnel-serve-bench-") as tmp:
        port = _free_port()
        prom = Path(tmp) / "metrics"
        prom.mkdir()
        cmd = [sys.executable, "-m", "recfunnel.cli", "serve", str(bundle), "--port", str(port)]
        cmd += ["--workers", str(workers), "--events", str(Path(tmp) / "events.db"), *args]
        full_env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(prom), **(env or {})}
        out = open(Path(tmp) / "serve.log", "wb")  # noqa: SIM115 (closed in finally)
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=full_env, start_new_session=True
        )
        t0 = time.perf_counter()
        try:
            while True:
                if proc.poll() is not None:
                    tail = (Path(tmp) / "serve.log").read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"recfunnel serve exited with {proc.returncode}:\n{tail}")
                try:
                    ready = json.loads(_get(port, "/ready", 2.0))
                    if _listeners(port) >= workers:
                        break
                except OSError:
                    pass
                if time.perf_counter() - t0 > 1200:
                    raise TimeoutError(f"the service on port {port} was not ready after 1200 s")
                time.sleep(0.5)
            log(f"service ready on port {port} in {time.perf_counter() - t0:.1f} s ({workers} workers)")
            yield {"port": port, "pid": proc.pid, "ready": ready, "start_seconds": time.perf_counter() - t0}
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)  # the parent stops its workers
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)  # the group this suite started
                    proc.wait(10)
            out.close()


# --------------------------------------------------------------------------------------------------
# metrics


_LINE = re.compile(r"^(recfunnel_\w+?)(?:\{(.*)\})? ([-+0-9.eE]+|NaN|[+-]Inf)$")


def scrape_metrics(port: int) -> dict[tuple[str, str], float]:
    """(metric name, label text) -> value of the service's ``recfunnel_*`` series."""
    out: dict[tuple[str, str], float] = {}
    for line in _get(port, "/metrics", 30.0).decode().splitlines():
        m = _LINE.match(line)
        if m and not m.group(1).endswith("_bucket"):
            out[(m.group(1), m.group(2) or "")] = float(m.group(3))
    return out


def _mean(before: dict, after: dict, name: str, label: str) -> float | None:
    """Mean of histogram `name` between two scrapes (sum / count differences)."""
    ds = after.get((f"{name}_sum", label), 0.0) - before.get((f"{name}_sum", label), 0.0)
    dc = after.get((f"{name}_count", label), 0.0) - before.get((f"{name}_count", label), 0.0)
    return ds / dc if dc > 0 else None


def _mean_ms(before: dict, after: dict, name: str, label: str) -> float | None:
    mean = _mean(before, after, name, label)
    return None if mean is None else mean * 1000.0


def stage_means(before: dict, after: dict) -> dict[str, float]:
    """Mean milliseconds of every funnel stage between two scrapes."""
    stages = sorted({lab for (n, lab) in after if n == "recfunnel_stage_seconds_count"})
    out = {}
    for lab in stages:
        v = _mean_ms(before, after, "recfunnel_stage_seconds", lab)
        if v is not None:
            out[lab.split('"')[1]] = v
    return out


def _settle(port: int, pid: int, timeout: float = 300.0) -> None:
    """Wait until the service has finished what the last load left it: over one second no
    ``/recommend`` or ``/events`` answer completed and its processes used under 0.2 s of CPU."""
    t0 = time.perf_counter()

    def answered() -> float:
        counts = scrape_metrics(port).items()
        work = ('route="/recommend"', 'route="/events"')
        return sum(v for (n, lab), v in counts if n == "recfunnel_requests_total" and lab.startswith(work))

    last = answered()
    while time.perf_counter() - t0 < timeout:
        cpu = _workers(pid)[0]
        time.sleep(1.0)  # no scrape inside the window: a scrape's own CPU would count
        busy = _workers(pid)[0] - cpu
        now = answered()
        if now == last and busy < 0.2:
            return
        last = now


# --------------------------------------------------------------------------------------------------
# the suite


def _load_row(load: dict, before: dict, after: dict, base: dict[str, Any]) -> dict:
    """The row of one load: `base` (the catalogue's keys) and the load's figures."""
    rec = load["endpoints"]["/recommend"]
    stages = stage_means(before, after)
    request_ms = _mean_ms(before, after, "recfunnel_request_seconds", 'route="/recommend"')
    keys = ("p50_ms", "p95_ms", "p99_ms", "max_ms", "mean_ms", "achieved_rps", "sent", "ok")
    metrics = {k: rec[k] for k in keys} | {
        "errors": load["all"]["errors"],
        "offered_rps": load["offered_rps"],
        "all_achieved_rps": load["all"]["achieved_rps"],
        "request_mean_ms": request_ms,
        "framework_overhead_ms": request_ms - stages["total"] if request_ms and "total" in stages else None,
        # client mean minus the service's: only when every request was answered (no lower bounds)
        "outside_handler_ms": rec["mean_ms"] - request_ms if request_ms and not rec["censored"] else None,
        "client_cpu_s": load["client_cpu_s"],
        # requests per funnel call (micro-batching; 1.0: each answered alone)
        "mean_batch": _mean(before, after, "recfunnel_recommend_batch_size", ""),
    }
    batch = metrics["mean_batch"]
    metrics["funnel_ms_per_request"] = stages["total"] / batch if batch and "total" in stages else None
    answered = load["all"]["ok"]
    metrics["server_cpu_ms_per_request"] = base["server_cpu_s"] * 1000 / answered if answered else None
    row = base | {
        "metrics": metrics,
        "stage_ms": stages,
        "endpoints": load["endpoints"],
        "load": {k: v for k, v in load.items() if k not in ("endpoints", "all")},
        "load_average_after": list(os.getloadavg()),
        "eval_seconds": load["wall_s"],
        "server_cpu_share": base["server_cpu_s"] / load["wall_s"] if load["wall_s"] else None,
    }
    if load["mode"] == "open":
        p99 = rec["p99_ms"]
        row["bar"] = {
            "p99_limit_ms": P99_BAR_MS,
            "p99_ok": p99 is not None and p99 <= P99_BAR_MS,
            "all_served": load["all"]["ok"] == round(load["offered_rps"] * load["duration_s"]),
            "zero_errors": load["all"]["errors"] == 0,
        }
        row["bar"]["met"] = all(row["bar"][k] for k in ("p99_ok", "all_served", "zero_errors"))
    return row


def _catalogue_rows(
    name: str,
    bundle: Path,
    info: dict,
    quick: bool,
    workers: int,
    plan: dict[str, Any],
    log: Log,
    variant: tuple[str, Sequence[str], Sequence[str] | None] = ("", (), None),
) -> list[dict]:
    """Serve `bundle`, run the warm-up and the three loads, one row per load. `variant`: (label
    suffix, more ``recfunnel serve`` options, the loads to run (None: all), e.g. the same service
    without micro-batching for the open-loop load only."""
    suffix, variant_args, wanted = variant
    manifest = read_bundle_manifest(bundle, verify=False)
    cfg = manifest["config"]
    bodies = request_bodies(bundle)
    ranker = bundle / "models" / "ranker"
    params = param_count(load_model(ranker).model) if cfg["ranker"]["kind"] == "model" else None
    rate, share = plan["rate"], plan["events_share"]
    only, mixed = {"/recommend": 1.0}, {"/recommend": 1 - share, "/events": share}
    loads = [  # label, mode, rate, seconds, shares
        ("warm-up", "open", rate, plan["warmup_s"], only),
        (f"open-{rate:g}rps", "open", rate, plan["open_s"], only),
        (f"open-{rate:g}rps+{share:.0%}events", "open", rate, plan["open_s"], mixed),
        (f"closed-c{plan['concurrency']}", "closed", None, plan["closed_s"], only),
    ]
    loads = [x for x in loads if x[0] == "warm-up" or wanted is None or x[0] in wanted]
    rows: list[dict] = []
    args = (*plan.get("serve_args", ()), *variant_args)
    with service(bundle, workers, log, plan.get("env"), args) as svc:
        port, pid = svc["port"], svc["pid"]
        precision = svc["ready"].get("ranker_precision")
        bundle_info = {
            "id": manifest["bundle_id"],
            "n_items": svc["ready"]["items"],
            "sources": manifest["sources"],
            "quotas": [r["quota"] for r in cfg["retrievers"]],
            "retrievers": cfg["retrievers"],
            "ranker": {k: cfg["ranker"][k] for k in ("kind", "family", "params", "features", "history")},
            "serving_rows": manifest.get("serving_rows"),
            "start_seconds": svc["start_seconds"],
            "ranker_precision": precision,
            "bf16_agreement": bf16_agreement(bundle, plan.get("data_root"))
            if precision == "bf16" and not suffix
            else None,
            **({"ann_recall": info["recall"]} if "recall" in info else {}),
        }
        for j, (label, mode, r, seconds, shares) in enumerate(loads):
            _settle(port, pid)
            connections = plan["pool"] if mode == "open" else plan["concurrency"]
            spec = LoadSpec(
                "127.0.0.1", port, mode, seconds, {e: bodies[e] for e in shares}, shares,
                rate=r, concurrency=connections, grace_s=plan["grace_s"], seed=j,
            )  # fmt: skip
            before, load_before = scrape_metrics(port), list(os.getloadavg())
            cpu0 = _workers(pid)[0]
            load = run_load_process(spec)
            cpu1, rss = _workers(pid)
            after = scrape_metrics(port)
            rec = load["endpoints"]["/recommend"]
            log(
                f"{name} {label}: /recommend p50 {rec['p50_ms'] or 0:.1f} p99 {rec['p99_ms'] or 0:.1f} "
                f"max {rec['max_ms'] or 0:.1f} ms, {load['all']['achieved_rps']:.1f} req/s answered, "
                f"{load['all']['errors']} errors; client CPU {load['client_cpu_s']:.2f} s, "
                f"service CPU {cpu1 - cpu0:.1f} s over {load['wall_s']:.1f} s"
            )
            if label == "warm-up":
                continue
            config = {"workers": workers, "k": 10, "mode": mode, "rate": r, "seconds": seconds}
            config |= {"connections": connections, "shares": shares, "server_env": plan.get("env") or {}}
            config |= {"serve_args": list(args)}
            config |= {"mix": "/recommend: 90% known users, 10% anonymous with 3-5 recent items"}
            config |= {"client": "recfunnel.bench.loadgen (asyncio + uvloop, its own process)"}
            base = {
                "suite": SUITE,
                "model": name,
                "dataset": manifest["dataset"]["name"],
                "protocol": label + suffix,
                "split": manifest["dataset"]["split"],
                "seed": 0,
                "server_cpu_s": cpu1 - cpu0,
                "load_average_before": load_before,
                "train_seconds": info.get("seconds", {}).get("total"),
                "peak_rss_mb": rss,
                "peak_rss_scope": "service worker processes (sum of VmHWM)",
                "params": params,
                "config": config,
                "bundle": bundle_info,
                "epochs_run": None,
                "best_epoch": None,
                "samples_per_second": None,
                "pipeline_share": None,
                "quick": quick,
            }
            rows.append(_load_row(load, before, after, base))
    return rows


def run_serve_latency_suite(
    quick: bool = False,
    data_root: Any = None,
    progress: bool = True,
    models: Sequence[str] | None = None,
    cache: str | Path | None = None,
    workers: int = 2,
    rate: float = 300.0,
    concurrency: int = 8,
    events_share: float = 0.1,
    open_seconds: float | None = None,
    closed_seconds: float | None = None,
    server_env: dict[str, str] | None = None,
    threads: int | None = 1,
    serve_args: Sequence[str] = (),
    compare_unbatched: bool = True,
) -> list[dict]:
    """Run the suite (see the module docstring) -> its rows.

    `models`: catalogues to run (default: ml-100k and synthetic-1M; quick: synthetic-2k). `cache`:
    where bundles are built once and kept (default: ``bench/cache`` in the repository; quick runs
    without one build in a temporary folder). `server_env`: extra environment of the service.
    `threads`: torch threads while bundles are built here (None: torch's default; the service
    runs its own default, ``recfunnel serve --threads 1``). `serve_args`: more ``recfunnel serve``
    options for every service started. `compare_unbatched` (full runs): each catalogue is served a
    second time with ``--max-batch 1`` for the open-loop and closed-loop loads, rows labelled
    ``... max-batch-1``, so micro-batching's effect is measured side by side in one run."""
    valid = QUICK_CATALOGUES if quick else CATALOGUES
    names = list(models) if models else list(valid)
    unknown = [m for m in names if m not in valid]
    if unknown:
        raise ValueError(f"unknown catalogue(s) {unknown}; valid{' (quick)' if quick else ''}: {list(valid)}")
    plan = {
        "rate": 50.0 if quick else rate,
        "open_s": open_seconds or (3.0 if quick else 30.0),
        "closed_s": closed_seconds or (3.0 if quick else 20.0),
        "warmup_s": 1.0 if quick else 5.0,
        "concurrency": concurrency,
        "pool": 32,
        "grace_s": 10.0,
        "events_share": events_share,
        "env": server_env,
        "serve_args": tuple(serve_args),
        "compare_unbatched": compare_unbatched and not quick,
        "data_root": data_root,
    }

    def log(msg: str) -> None:
        if progress:
            print(f"[{SUITE} {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    machine = machine_info() | {"load_average": list(os.getloadavg())}
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="recfunnel-serve-latency-") as tmp:
        root = Path(cache) if cache is not None else (Path(tmp) if quick else DEFAULT_CACHE)
        for name in names:
            before = torch.get_num_threads()
            torch.set_num_threads(threads or before)
            try:
                bundle, info = catalogue_bundle(name, root, data_root, log, progress)
            finally:
                torch.set_num_threads(before)
            rows += _catalogue_rows(name, bundle, info, quick, workers, plan, log)
            if plan["compare_unbatched"]:  # side by side in one run: the same service, one per call
                only = (f"open-{plan['rate']:g}rps", f"closed-c{plan['concurrency']}")
                variant = (" max-batch-1", ("--max-batch", "1"), only)
                rows += _catalogue_rows(name, bundle, info, quick, workers, plan, log, variant)
    date = utc_now()
    return [r | {"machine": machine, "date": date} for r in rows]
