"""A real Milvus 2.x standalone server without containers, and its queries per second beside FAISS's.

The PyPI package ``milvus`` (2.3.x, "embedded Milvus"; no Python dependencies) ships the Milvus
standalone server binary and its shared libraries (compressed) together with a config template.
:class:`MilvusServer` unpacks them once per version into a cache (``~/.cache/recfunnel``), writes a
config whose every port is a free one (the embedded etcd's client and peer ports included), whose
components register at 127.0.0.1 and whose data, logs and etcd live under a folder of its own,
starts ``milvus run standalone`` as a child process, waits until it answers, and stops it by its
PID::

    pip install 'milvus==2.3.5'     # here, or in another venv: MILVUS_SERVER_PYTHON=/that/venv/bin/python
    python -m recfunnel.bench.milvus_server [--quick] [--uri http://HOST:19530] [--out FILE]

The package needs only the Python standard library, so it can share the project's venv (its
``client`` extra would pin pymilvus < 2.4: do not install that extra). It is run by the Python in
``MILVUS_SERVER_PYTHON`` when set, else by this one. Tested: milvus 2.3.5 (server v2.3.5) with
pymilvus 3.0.2 on Linux x86-64. Notes on the binary: its gRPC ports listen on all interfaces (they
are free ones, chosen here; the components call each other on 127.0.0.1), it takes a lock file in
``/run/milvus`` (``/tmp/milvus`` when that cannot be created) that does not stop a second server,
and it answers 3-20 s after it starts on 2 cores (the first start on a machine also unpacks ~250 MB
of binaries, ~9 s).

:func:`run` (this module's measurement; ``uri``: a server that is already running, else one is
started in a temp folder) indexes one set of normalised clustered vectors (the ``ann`` suite's
synthetic mixture) with exact search, FAISS HNSW and a Milvus HNSW collection on the server (after
its index is built and loaded), and measures recall@10 / recall@100 vs exact and queries per second:

* ``qps_batch``: all queries in one ``search()`` call, k=10, median of ``repeats`` runs;
* ``qps_single``: one query per call, in sequence (what one serving request costs), k=10;
* ``qps_batch_2t`` (exact and FAISS only): ``qps_batch`` with two threads.

FAISS and exact search run in this process on one thread (except ``qps_batch_2t``); the server runs
in its own process with its own threads (on a 2-core machine shared with the client: the client's
thread and the server's threads compete for the same cores), and every Milvus figure includes the
gRPC round trip and pymilvus's (de)serialisation. milvus-lite is not in the table: it is a
functional stand-in, not a speed figure. One row per backend::

    {suite: "milvus-server", model: <backend>, backend, dataset, metrics: {"recall@10",
     "recall@100", "qps_batch", "qps_single", ["qps_batch_2t"]}, build_seconds (Milvus: insert,
     flush, index built and loaded), server: {version, uri, started_here},
     pymilvus, n_items, dim, n_queries, ...}
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "SERVER_PACKAGE",
    "MilvusServer",
    "MilvusServerUnavailable",
    "run",
    "server_python",
]

#: the PyPI package (and version) tested as the server
SERVER_PACKAGE = "milvus==2.3.5"
#: environment variable naming a Python interpreter that has the ``milvus`` package
PYTHON_ENV = "MILVUS_SERVER_PYTHON"
INSTALL_HINT = (
    f"pip install '{SERVER_PACKAGE}' (an embedded Milvus standalone server; stdlib only) into this venv, "
    f"or into another one and set {PYTHON_ENV}=/that/venv/bin/python"
)
START_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 10.0

# Run by the server package's Python: unpack the binaries, write milvus.yaml (ports given) and an
# embedded-etcd config that puts etcd's client and peer ports on free ones too; print where things are.
_PREPARE = r"""
import json, os, re, shutil, sys, tempfile
from os.path import exists, join
import milvus

base, ports, cache = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
peer = ports.pop("etcd_peer_port")
config = milvus.MilvusServerConfig(data_dir=base, **ports)
config.resolve()
# the binaries, unpacked once per package version into the cache (~9 s), atomically (a folder renamed
# into place), so that sessions running at the same time never see half-written files
binaries = join(cache, f"milvus-{milvus.__version__}")
if not exists(join(binaries, "bin", "milvus")):
    os.makedirs(cache, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".unpacking-", dir=cache)
    milvus._initialize_data_files(staging)
    try:
        os.rename(staging, binaries)
    except OSError:  # another session got there first
        shutil.rmtree(staging, ignore_errors=True)
etcd_yaml = join(config.base_data_dir, "configs", "etcd.yaml")
client, peer = f"http://127.0.0.1:{ports['etcd_port']}", f"http://127.0.0.1:{peer}"
with open(etcd_yaml, "w") as f:
    f.write(
        f"name: recfunnel\nlisten-client-urls: {client}\nadvertise-client-urls: {client}\n"
        f"listen-peer-urls: {peer}\ninitial-advertise-peer-urls: {peer}\n"
        f"initial-cluster: recfunnel={peer}\n"
    )
path = join(config.base_data_dir, "configs", "milvus.yaml")
text = open(path).read()
assert text.count("\netcd:\n") == 1, "unexpected milvus.yaml template"
text = text.replace("\netcd:\n", f"\netcd:\n  config:\n    path: {etcd_yaml}\n", 1)
# every component registers (and is called at) 127.0.0.1, not the host's first network address
text, n_ip = re.subn(r"(?m)^(  ip:) *(#.*)?$", r"\1 127.0.0.1", text)
assert n_ip >= 6, "unexpected milvus.yaml template (component ip: entries)"
# a throw-away server: stop within seconds of SIGTERM (the template waits up to 30 minutes)
text = text.replace("gracefulStopTimeout: 1800 ", "gracefulStopTimeout: 5 ")
open(path, "w").write(text)
print(json.dumps({"version": milvus.__version__, "exe": join(binaries, "bin", "milvus"),
                  "base": config.base_data_dir, "proxy_port": config.get("proxy_port")}))
"""
_PORT_KEYS = (
    "etcd_port",
    "etcd_peer_port",
    "root_coord_port",
    "proxy_port",
    "proxy_internal_port",
    "query_coord_port",
    "query_node_port",
    "index_coord_port",
    "index_node_port",
    "data_coord_port",
    "data_node_port",
    "metrics_port",
)


class MilvusServerUnavailable(RuntimeError):
    """The server package is not installed (the message says how to install it)."""


def server_python() -> str:
    """The Python interpreter that has the ``milvus`` server package; raises
    :class:`MilvusServerUnavailable` (with how to install it) when there is none."""
    python = os.environ.get(PYTHON_ENV) or sys.executable
    probe = "import milvus; assert hasattr(milvus, 'MilvusServerConfig'); print(milvus.__version__)"
    try:
        done = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise MilvusServerUnavailable(f"cannot run {python}: {exc}; {INSTALL_HINT}") from None
    if done.returncode != 0:
        raise MilvusServerUnavailable(f"no Milvus server package for {python}: {INSTALL_HINT}")
    return python


def default_cache() -> Path:
    """Where the server's binaries are unpacked (once per version): ``$XDG_CACHE_HOME/recfunnel`` or
    ``~/.cache/recfunnel``."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "recfunnel"


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


class MilvusServer:
    """One Milvus standalone server (the ``milvus`` PyPI package's binary) with its config, data and
    logs under `folder`, on free ports of 127.0.0.1 (the binaries are unpacked once into `cache`,
    default :func:`default_cache`); :meth:`start` returns once it answers, :meth:`stop` ends it by
    its PID (also at garbage collection or interpreter exit)."""

    def __init__(
        self,
        folder: str | os.PathLike[str],
        python: str | None = None,
        cache: str | os.PathLike[str] | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.python = python
        self.cache = Path(cache) if cache is not None else default_cache()
        self.proc: subprocess.Popen | None = None
        self.version: str | None = None
        self.ports: dict[str, int] = {}
        self._finalizer: weakref.finalize | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.ports['proxy_port']}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self, timeout: float = START_TIMEOUT_S) -> MilvusServer:
        python = self.python or server_python()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.ports = dict(zip(_PORT_KEYS, _free_ports(len(_PORT_KEYS)), strict=True))
        given = {k: v for k, v in self.ports.items() if k != "metrics_port"}
        done = subprocess.run(
            [python, "-c", _PREPARE, str(self.folder), json.dumps(given), str(self.cache)],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if done.returncode != 0:
            raise RuntimeError(f"preparing the Milvus server failed: {done.stderr.strip()[-2000:]}")
        info = json.loads(done.stdout.strip().splitlines()[-1])
        self.version, base, exe = info["version"], Path(info["base"]), info["exe"]
        env = {
            **os.environ,
            "DEPLOY_MODE": "STANDALONE",
            "METRICS_PORT": str(self.ports["metrics_port"]),
            "MILVUS_RUN_DIR": str(base / "run"),
            "LD_LIBRARY_PATH": ":".join(
                p for p in (str(Path(exe).parent), os.environ.get("LD_LIBRARY_PATH")) if p
            ),
        }
        logs = base / "logs"
        with (logs / "milvus-stdout.log").open("ab") as out, (logs / "milvus-stderr.log").open("ab") as err:
            self.proc = subprocess.Popen(
                [exe, "run", "standalone"],
                cwd=base,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,  # a Ctrl-C in the terminal does not reach it; stop() does
            )
        self._finalizer = weakref.finalize(self, _stop, self.proc)
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        """Until /healthz says OK and a pymilvus client can list collections."""
        deadline = time.monotonic() + timeout
        health = f"http://127.0.0.1:{self.ports['metrics_port']}/healthz"
        client_error = "not tried"
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the Milvus server exited with {self.proc.returncode}: {self.log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the Milvus server did not answer within {timeout:g} s ({client_error}): "
                    + self.log_tail()
                )
            try:
                with urllib.request.urlopen(health, timeout=2) as resp:
                    healthy = b"OK" in resp.read()
            except (OSError, urllib.error.URLError):
                healthy = False
            if healthy:
                try:
                    from pymilvus import MilvusClient

                    client = MilvusClient(uri=self.uri, timeout=5)
                    try:
                        client.list_collections()
                        return
                    finally:
                        client.close()
                except Exception as exc:  # not ready yet
                    client_error = f"pymilvus: {exc}"
            time.sleep(0.5)

    def stop(self) -> None:
        """SIGTERM to the server's PID (it stops within ~5 s), SIGKILL after 10 s (a 2.3 server
        can hang in its graceful stop; the data is a test's, so nothing is lost that matters)."""
        if self._finalizer is not None:
            self._finalizer()
        self.proc = None

    def log_tail(self, chars: int = 3000) -> str:
        parts = []
        for name in ("milvus-stderr.log", "milvus-stdout.log"):
            path = self.folder / "logs" / name
            if path.exists():
                parts.append(f"[{name}] {path.read_text(errors='replace')[-chars:]}")
        return "\n".join(parts) or "(no log)"

    def __enter__(self) -> MilvusServer:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------------------------------
# the measurement


def wait_until_indexed(index: Any, timeout: float = 600.0) -> None:
    """Block until the server has built the vector index of every row of a server MilvusIndex's
    collection, then release and reload it so that searches use the index, not brute force (left to
    itself, a 2.3 server swaps the indexed segments in ~10 s later; a reload takes ~5 s).

    Needs at least ``minSegmentNumRowsToEnableIndex`` rows (1,024 by default): smaller segments are
    never indexed (they are searched by brute force), and this would wait for nothing."""
    from recfunnel.index.milvus import VECTOR_FIELD

    client, name = index._conn, index.params.collection
    deadline = time.monotonic() + timeout
    while True:
        described = client.describe_index(name, VECTOR_FIELD)
        pending, indexed = int(described.get("pending_index_rows", 0)), int(described.get("indexed_rows", 0))
        if pending == 0 and indexed >= len(index):
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"collection {name!r}: index not built within {timeout:g} s: {described}")
        time.sleep(0.25)
    client.release_collection(name)
    client.load_collection(name)
    if hasattr(client, "list_loaded_segments"):  # check it (pymilvus 3.x has this call)
        segments = client.list_loaded_segments(name)
        indexed_rows = sum(s.num_rows for s in segments if s.index_id)
        if indexed_rows < len(index):
            raise RuntimeError(
                f"collection {name!r}: {indexed_rows} of {len(index)} rows loaded with an index"
            )


def _median_seconds(fn: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _measure(index: Any, queries: np.ndarray, truth10: np.ndarray, truth100: np.ndarray, repeats: int):
    from recfunnel.index import recall_at_k

    found10, _ = index.search(queries, 10)
    found100, _ = index.search(queries, 100)
    batch = _median_seconds(lambda: index.search(queries, 10), repeats)
    single = _median_seconds(lambda: [index.search(q[None], 10) for q in queries], 1)
    return {
        "recall@10": recall_at_k(found10, truth10, 10),
        "recall@100": recall_at_k(found100, truth100, 100),
        "qps_batch": len(queries) / batch,
        "qps_single": len(queries) / single,
    }


def _log(progress: bool, msg: str) -> None:
    if progress:
        print(f"[milvus-server {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run(
    quick: bool = False,
    progress: bool = False,
    *,
    uri: str | None = None,
    n_items: int | None = None,
    n_queries: int | None = None,
    repeats: int | None = None,
    out: str | os.PathLike[str] | None = None,
) -> list[dict]:
    """Exact, FAISS HNSW and Milvus HNSW (on a real server) on the same vectors: recall vs exact and
    queries per second (module docstring). `uri`: a running server (else one is started in a temp
    folder and stopped at the end); quick: 20k vectors and 200 queries (default 200k and 1,000)."""
    import pymilvus
    import torch

    from recfunnel.bench.ann import synthetic_clusters
    from recfunnel.bench.rows import machine_info, write_json
    from recfunnel.index import build_index

    n = n_items or (20_000 if quick else 200_000)
    nq = n_queries or (200 if quick else 1000)
    repeats = repeats or (1 if quick else 3)
    vs = synthetic_clusters(n, dim=64, clusters=max(10, n // 1000), n_queries=nq)
    server, folder = None, None
    if uri is None:
        folder = tempfile.mkdtemp(prefix="recfunnel-milvus-server-")
        _log(progress, f"starting a Milvus server in {folder}")
        t0 = time.perf_counter()
        server = MilvusServer(folder).start()
        uri = server.uri
        _log(progress, f"server {server.version} answering at {uri} after {time.perf_counter() - t0:.1f} s")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rows: list[dict] = []
    try:
        base = {
            "suite": "milvus-server",
            "dataset": vs.name,
            "vectors_note": vs.note,
            "protocol": "recall vs exact; qps_batch: one call with every query, qps_single: one query "
            "per call; k=10",
            "n_items": n,
            "dim": int(vs.items.shape[1]),
            "n_queries": nq,
            "repeats": repeats,
            "quick": quick,
            "server": {
                "version": server.version if server else None,
                "uri": uri,
                "started_here": bool(server),
            },
            "pymilvus": pymilvus.__version__,
            "machine": machine_info(),
            "load_average_start": os.getloadavg()[0],
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        exact = build_index("exact", vs.items, threads=1)
        truth10, _ = exact.search(vs.queries, 10)
        truth100, _ = exact.search(vs.queries, 100)
        # the same HNSW parameters on both sides (the defaults: M=32, efConstruction=100, ef=128)
        backends: list[tuple[str, str, dict[str, Any]]] = [
            ("exact", "exact", {}),
            ("faiss-hnsw", "hnsw", {"threads": 1}),
            ("milvus-server-hnsw", "milvus", {"uri": uri, "index_type": "HNSW", "timeout": 60}),
        ]
        for label, name, params in backends:
            t0 = time.perf_counter()
            index = exact if name == "exact" else build_index(name, vs.items, **params)
            if name == "milvus":
                wait_until_indexed(index)
            build_s = time.perf_counter() - t0
            try:
                metrics = _measure(index, vs.queries, truth10, truth100, repeats)
                if name != "milvus":  # in this process: also with both cores
                    index.threads = 2
                    metrics["qps_batch_2t"] = len(vs.queries) / _median_seconds(
                        lambda index=index: index.search(vs.queries, 10), repeats
                    )
                    index.threads = 1
            finally:
                if name == "milvus":
                    index._conn.drop_collection(index.params.collection)
                    index.close()
            rows.append(
                {
                    **base,
                    "model": label,
                    "backend": name,
                    "params": {k: v for k, v in index.params.model_dump().items() if k != "token"},
                    "metrics": metrics,
                    "build_seconds": 0.0 if name == "exact" else build_s,
                }
            )
            _log(
                progress,
                f"{label}: recall@10 {metrics['recall@10']:.3f} @100 {metrics['recall@100']:.3f}, "
                f"{metrics['qps_batch']:.0f} q/s batched, {metrics['qps_single']:.0f} q/s one by one",
            )
    finally:
        torch.set_num_threads(threads)
        if server is not None:
            server.stop()
            shutil.rmtree(folder, ignore_errors=True)
    for r in rows:
        r["load_average_end"] = os.getloadavg()[0]
    if out is not None:
        write_json(rows, out)
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m recfunnel.bench.milvus_server", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="20k vectors, 200 queries")
    parser.add_argument("--uri", default=None, help="a running server (default: start one here)")
    parser.add_argument("--size", type=int, default=None, help="vectors (default 200k; quick 20k)")
    parser.add_argument("--out", type=Path, default=None, help="also write the rows here (JSON)")
    args = parser.parse_args(argv)
    rows = run(args.quick, True, uri=args.uri, n_items=args.size, out=args.out)
    for r in rows:
        m = r["metrics"]
        print(
            f"{r['model']:>20}  recall@10 {m['recall@10']:.3f}  recall@100 {m['recall@100']:.3f}  "
            f"{m['qps_batch']:9.0f} q/s batched  {m['qps_single']:8.0f} q/s one by one"
        )


if __name__ == "__main__":
    main()
