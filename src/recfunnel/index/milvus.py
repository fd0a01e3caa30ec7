"""Milvus (Wang et al., SIGMOD 2021): the index kept in a Milvus collection, for scale-out serving.

    index = MilvusIndex(index_type="HNSW", ef_search=128).build(item_vectors, ids)       # milvus-lite
    index = MilvusIndex(uri="http://milvus:19530", collection="items_v3").build(...)     # a server

Everything the other backends do is done here too (normalisation, the bias column and the
norm-equalising dimension for exact MIPS, the id mapping, ``exclude`` with k results still returned):
the collection stores the prepared vectors under their row position (primary key ``pos``), metric
inner product; ids stay in ``ids.npy`` as for every backend.

Where the collection lives (``uri``):

* ``None`` (default): an embedded milvus-lite database in a private temp folder, removed when the
  index is garbage-collected or :meth:`MilvusIndex.close` is called. :meth:`~Index.save` flushes and
  closes it, then stores the whole database as ``milvus.tar`` in the index folder; :meth:`~Index.load`
  unpacks it into a fresh private folder, so the saved folder is never modified (its checksums hold).
  milvus-lite is a functional stand-in for a server, not a speed figure: about 35 ms a query at 100k
  vectors on a 2-core machine, and it brute-forces index types it does not implement, which is why
  ``index_type`` is limited to FLAT, HNSW and IVF_FLAT.
* ``"http(s)://host:19530"``: a Milvus server. The index folder records only where the collection is
  (``milvus.tar`` holds ``collection.json``: uri, db_name, collection; no vectors). Loading reconnects
  and checks that the collection still holds ``count`` rows of ``index_dim`` as meta.json says; an
  unreachable server raises :class:`MilvusConnectionError` after ``timeout`` seconds. Credentials go
  in ``token`` (or the ``MILVUS_TOKEN`` environment variable when loading), never in the uri: the uri
  is written to meta.json and ``token`` is not. build() and add() return once the rows are flushed;
  the server indexes new segments in the background and searches them without that index (brute
  force or an interim index) until then; with milvus-lite, build() and add() wait for its indexing.
  Searches use consistency level "Session": they see this process's own build() and add() at once,
  and rows written by another process as soon as the server has them (typically within a second).

Search parameters follow the FAISS backends (``ef_search`` for HNSW, ``nprobe`` for IVF_FLAT, both
changeable after build and widened on retries). A Milvus server returns at most 16,384 results per
query, so ``k`` + the longest exclusion list must stay within that.

``pymilvus`` (and ``milvus-lite`` for ``uri=None``) are imported only when this backend is used:
``pip install 'recfunnel[milvus]'``.
"""

from __future__ import annotations

import math
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal
from urllib.parse import urlparse

import numpy as np
from pydantic import Field, SecretStr, field_validator

from recfunnel.index.base import Index, IndexFileError, IndexParams
from recfunnel.index.milvus_db import (
    DESCRIPTOR,
    MilvusConnectionError,
    _LiteFolder,
    _pymilvus,
    _tar_folder,
    _untar,
)

__all__ = ["MAX_TOPK", "MilvusConnectionError", "MilvusIndex", "MilvusParams"]

#: most results a Milvus server returns per query (its default ``quotaAndLimits`` topK limit)
MAX_TOPK = 16384
PK_FIELD = "pos"
VECTOR_FIELD = "vector"
_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
_INSERT_BYTES = 16 << 20  # per insert call, well under gRPC's default 64 MB message limit
_RESULT_ROWS = 1 << 20  # query rows x fetch per search call
#: Searches read this client's own writes (build, add) and nothing newer than needed: with the
#: collection's "Strong" level a server makes every search wait for its next time tick (~200 ms a
#: call on Milvus 2.3.5, measured; "Session" answers in ~3 ms and still sees the rows just added)
SEARCH_CONSISTENCY = "Session"


class MilvusParams(IndexParams):
    uri: str | None = Field(
        None,
        description="None: an embedded milvus-lite database, saved inside the index folder; "
        "'http(s)://host:19530': a Milvus server (the index folder records where, not the vectors)",
    )
    collection: str | None = Field(
        None,
        max_length=255,
        pattern=_NAME_PATTERN,
        description="collection name (letters, digits, _); None: 'recfunnel_<12 hex>' at build",
    )
    index_type: Literal["FLAT", "HNSW", "IVF_FLAT"] = Field("HNSW", description="Milvus index type")
    m: int = Field(32, ge=2, le=2048, description="HNSW: graph links per node (M)")
    ef_construction: int = Field(100, ge=1, description="HNSW: candidate list size while building")
    ef_search: int = Field(128, ge=1, description="HNSW: candidate list size while searching (ef)")
    nlist: int | None = Field(
        None, ge=1, le=65536, description="IVF_FLAT: k-means cells; None: round(sqrt(n)) at build"
    )
    nprobe: int = Field(16, ge=1, le=65536, description="IVF_FLAT: cells searched per query")
    db_name: str = Field("", description="server database ('' = the server's default)")
    token: SecretStr | None = Field(
        None,
        exclude=True,
        description="server credentials ('user:password' or an API key); never saved. None: the "
        "MILVUS_TOKEN environment variable, if set",
    )
    timeout: float = Field(10.0, gt=0, le=3600, description="seconds to wait for the server to answer")

    @field_validator("uri")
    @classmethod
    def _check_uri(cls, uri: str | None) -> str | None:
        if uri is None:
            return None
        parsed = urlparse(uri)
        if parsed.scheme.lower() not in ("http", "https", "tcp") or not parsed.hostname:
            raise ValueError(
                f"uri must be None (embedded milvus-lite, managed by the index) or a server address "
                f"like 'http://host:19530', got {uri!r}"
            )
        if parsed.username or parsed.password:
            raise ValueError("put credentials in token=, not in the uri (the uri is saved in meta.json)")
        return uri


class MilvusIndex(Index):
    """A Milvus collection (FLAT | HNSW | IVF_FLAT, inner product); embedded milvus-lite or a server.

    Supports add() of new items. See the module docstring for where the data lives and what
    save/load keep; :meth:`close` releases the connection (and the embedded database) early."""

    backend = "milvus"
    Params = MilvusParams
    search_params = ("ef_search", "nprobe")
    payload_name = "milvus.tar"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._auto_nlist = self.params.nlist is None  # resolved at each build and saved resolved
        self._client: Any = None
        self._lite: _LiteFolder | None = None
        self._owned: str | None = None  # the server collection this object created or loaded

    # ---- connection --------------------------------------------------------------------------------
    @property
    def lite(self) -> bool:
        """Whether the collection lives in an embedded milvus-lite database (``uri=None``)."""
        return self.params.uri is None

    def _where(self) -> str:
        if self.lite:
            return "the embedded milvus-lite database"
        db = f", database {self.params.db_name!r}" if self.params.db_name else ""
        return f"the Milvus server at {self.params.uri}{db}"

    def _connect(self, lite: _LiteFolder | None = None) -> Any:
        """A MilvusClient for the server, or for `lite` (default: this index's embedded database)."""
        pymilvus = _pymilvus(self.lite)
        if self.lite:
            folder = lite or self._lite
            if folder is None:
                raise RuntimeError("the milvus index has no database: build() or load() it first")
            try:
                client = pymilvus.MilvusClient(uri=str(folder.path), timeout=self.params.timeout)
            except pymilvus.MilvusException as exc:
                raise RuntimeError(f"milvus-lite cannot open {folder.path}: {exc.message}") from None
            folder.clients.append(client)
            return client
        token = self.params.token.get_secret_value() if self.params.token else os.environ.get("MILVUS_TOKEN")
        with self._rpc():
            return pymilvus.MilvusClient(
                uri=self.params.uri,
                token=token or "",
                db_name=self.params.db_name,
                timeout=self.params.timeout,
            )

    @contextmanager
    def _rpc(self) -> Iterator[None]:
        """Turn pymilvus's 'server unavailable' errors into one clear MilvusConnectionError."""
        pymilvus = _pymilvus(self.lite)
        try:
            yield
        except pymilvus.MilvusException as exc:
            unavailable = isinstance(exc, pymilvus.MilvusUnavailableException)
            if not unavailable and exc.code != pymilvus.Status.CONNECT_FAILED:
                raise
            raise MilvusConnectionError(
                f"cannot reach {self._where()} within {self.params.timeout:g} s: {exc.message}. Check "
                "that the server is running and the uri, db_name and token (or MILVUS_TOKEN) are right"
            ) from None

    @property
    def _conn(self) -> Any:
        """The open client, connected and with the collection loaded for search."""
        if self._client is None:
            client = self._connect()
            client.load_collection(self.params.collection)
            self._client = client
        return self._client

    def _disconnect(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            if self._lite is not None and client in self._lite.clients:
                self._lite.clients.remove(client)
            client.close()

    def close(self) -> None:
        """Release the connection; with milvus-lite also delete the private database (the index is
        unusable afterwards, a saved folder is untouched)."""
        self._disconnect()
        if self._lite is not None:
            self._lite.close()
            self._lite = None
            self.dim = None

    # ---- building ----------------------------------------------------------------------------------
    def _nlist(self, n: int) -> int:
        if not self._auto_nlist:
            if self.params.nlist > n:
                raise ValueError(f"nlist={self.params.nlist} is larger than the {n} vectors to train on")
            return self.params.nlist
        return max(1, min(round(math.sqrt(n)), n // 39))

    def _index_params(self, client: Any, n: int) -> tuple[Any, int | None]:
        p = self.params
        if p.index_type == "HNSW":
            build = {"M": p.m, "efConstruction": p.ef_construction}
        elif p.index_type == "IVF_FLAT":
            build = {"nlist": self._nlist(n)}
        else:
            build = {}
        index_params = client.prepare_index_params()
        index_params.add_index(
            field_name=VECTOR_FIELD, index_type=p.index_type, metric_type="IP", params=build
        )
        if self.lite and build:
            # pymilvus sends build parameters as flat key/values, which servers read but milvus-lite
            # 3.x ignores (it reads only the legacy "params" JSON entry): send that entry as well
            index_params[0].get_index_configs()["params"] = dict(build)
        return index_params, build.get("nlist")

    def _create(self, client: Any, name: str, x: np.ndarray, lite: _LiteFolder | None) -> int | None:
        """Create collection `name` holding x (rows at positions 0..n-1); return the resolved nlist."""
        pymilvus = _pymilvus(self.lite)
        schema = pymilvus.MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field(PK_FIELD, pymilvus.DataType.INT64, is_primary=True)
        schema.add_field(VECTOR_FIELD, pymilvus.DataType.FLOAT_VECTOR, dim=int(x.shape[1]))
        index_params, nlist = self._index_params(client, len(x))
        client.create_collection(name, schema=schema, index_params=index_params, consistency_level="Strong")
        try:
            self._insert(client, name, x, 0, lite)
        except BaseException:
            client.drop_collection(name)
            raise
        return nlist

    def _insert(self, client: Any, name: str, x: np.ndarray, start: int, lite: _LiteFolder | None) -> None:
        batch = max(1, _INSERT_BYTES // (4 * x.shape[1] + 8))
        for s in range(0, len(x), batch):
            rows = x[s : s + batch]
            client.insert(name, [{PK_FIELD: start + s + i, VECTOR_FIELD: v} for i, v in enumerate(rows)])
        client.flush(name)
        if lite is not None:  # return with the index in place, as the FAISS backends do
            lite.wait_for_indexing(name)

    def _build(self, x: np.ndarray) -> None:
        name = self.params.collection or f"recfunnel_{secrets.token_hex(6)}"
        if self.lite:
            nlist = self._build_lite(name, x)
        else:
            with self._rpc():
                nlist = self._build_on_server(name, x)
        self.params.collection = name
        if nlist is not None:
            self.params.nlist = nlist

    def _build_lite(self, name: str, x: np.ndarray) -> int | None:
        # a fresh database for every build: the old one serves until the new one is complete
        folder = _LiteFolder()
        try:
            client = self._connect(folder)
            nlist = self._create(client, name, x, folder)
        except BaseException:
            folder.close()
            raise
        self._disconnect()
        if self._lite is not None:
            self._lite.close()
        self._lite, self._client = folder, client
        return nlist

    def _build_on_server(self, name: str, x: np.ndarray) -> int | None:
        client = self._conn_server()
        exists = client.has_collection(name)
        if exists and name != self._owned:
            raise ValueError(
                f"collection {name!r} already exists on {self._where()}; choose another `collection`, "
                "drop it first, or load the index folder that owns it and rebuild that"
            )
        staging = f"{name[:230]}_build_{secrets.token_hex(4)}" if exists else name
        nlist = self._create(client, staging, x, None)
        if exists:  # swap in the new collection only once it is complete
            client.drop_collection(name)
            client.rename_collection(staging, name)
            client.load_collection(name)
        self._owned = name
        return nlist

    def _conn_server(self) -> Any:
        """The server client (connecting if needed), before any collection exists."""
        if self._client is None:
            self._client = self._connect()
        return self._client

    def _add(self, x: np.ndarray) -> None:
        with self._rpc():
            client, name, start = self._conn, self.params.collection, self.count
            try:
                self._insert(client, name, x, start, self._lite)
            except BaseException:
                try:  # leave no partial batch behind: the ids mapping was not extended
                    client.delete(name, filter=f"{PK_FIELD} >= {start}")
                except Exception:
                    pass
                raise

    # ---- searching ---------------------------------------------------------------------------------
    def _effort_params(self, fetch: int, effort: int) -> dict[str, int]:
        p = self.params
        if p.index_type == "HNSW":  # Milvus needs ef >= limit; a retry widens it with the fetch
            return {"ef": min(max(p.ef_search, fetch) * 2**effort, max(fetch, self.count))}
        if p.index_type == "IVF_FLAT":
            return {"nprobe": min(p.nlist or 1, p.nprobe * 4**effort)}
        return {}

    def _effort_value(self, fetch: int, effort: int) -> int | None:
        return next(iter(self._effort_params(fetch, effort).values()), None)

    def _exhaustive(self, fetch: int, effort: int) -> bool:
        p, params = self.params, self._effort_params(fetch, effort)
        if p.index_type == "HNSW":
            return params["ef"] >= self.count
        if p.index_type == "IVF_FLAT":
            return params["nprobe"] >= (p.nlist or 1)
        return True

    def _search(self, q: np.ndarray, fetch: int, effort: int) -> tuple[np.ndarray, np.ndarray]:
        if fetch > MAX_TOPK:
            if effort == 0:
                raise ValueError(
                    f"Milvus returns at most {MAX_TOPK} results per query; k plus the longest exclusion "
                    f"list asks for {fetch}: lower k or exclude fewer ids per query"
                )
            fetch = MAX_TOPK  # a wider retry: as many as the server gives
        search_params = {"metric_type": "IP", "params": self._effort_params(fetch, effort)}
        pos = np.full((len(q), fetch), -1, dtype=np.int64)
        scores = np.full((len(q), fetch), -np.inf, dtype=np.float32)
        batch = max(1, min(1024, _RESULT_ROWS // fetch))
        with self._rpc():
            client, name = self._conn, self.params.collection
            for s in range(0, len(q), batch):
                result = client.search(
                    name,
                    data=q[s : s + batch],
                    limit=fetch,
                    search_params=search_params,
                    output_fields=[PK_FIELD],
                    consistency_level=SEARCH_CONSISTENCY,
                )
                for i, hits in enumerate(result):
                    found = len(hits.ids)
                    pos[s + i, :found] = hits.ids
                    scores[s + i, :found] = hits.distances
        order = np.argsort(-scores, axis=1, kind="stable")  # best first, padding last
        return np.take_along_axis(pos, order, axis=1), np.take_along_axis(scores, order, axis=1)

    # ---- persistence -------------------------------------------------------------------------------
    def _descriptor(self) -> dict[str, Any]:
        return {"uri": self.params.uri, "db_name": self.params.db_name, "collection": self.params.collection}

    def _to_bytes(self) -> bytes:
        with self._rpc():
            self._conn.flush(self.params.collection)
        if not self.lite:
            return _tar_folder(None, self._descriptor())
        # close the flushed embedded database so the files are complete and quiescent; the next
        # search reconnects (milvus-lite restarts its in-process server on the same folder)
        self._disconnect()
        self._lite.stop_server()
        return _tar_folder(self._lite.path, self._descriptor())

    def _from_bytes(self, blob: bytes) -> None:
        folder = _LiteFolder() if self.lite else None
        try:
            descriptor = _untar(blob, folder.root if folder else None)
            if descriptor != self._descriptor():
                raise ValueError(f"its {DESCRIPTOR} ({descriptor}) disagrees with meta.json's params")
            if folder is not None:  # open it now: a broken database is a broken file
                self._lite = folder
                self._conn  # noqa: B018 (connects and loads the collection)
        except BaseException:
            self._disconnect()
            if folder is not None:
                folder.close()
            self._lite = None
            raise
        self._owned = self.params.collection

    def _stored_shape(self) -> tuple[int, int]:
        # for a server this is the first contact: an unreachable one raises MilvusConnectionError
        name = self.params.collection
        with self._rpc():
            client = self._conn if self.lite else self._conn_server()
            if not client.has_collection(name):
                raise IndexFileError(
                    f"collection {name!r} is not on {self._where()} (dropped, or another database?)"
                )
            fields = client.describe_collection(name)["fields"]
            dims = [f.get("params", {}).get("dim") for f in fields if f.get("name") == VECTOR_FIELD]
            if not dims or dims[0] is None:
                raise IndexFileError(f"collection {name!r} on {self._where()} has no {VECTOR_FIELD!r} field")
            if not self.lite:
                client.load_collection(name)
            rows = client.query(name, output_fields=["count(*)"], consistency_level="Strong")
        return int(dims[0]), int(rows[0]["count(*)"])

    @property
    def nbytes(self) -> int:
        """milvus-lite: the database's size on disk; a server: the raw vectors it stores (its own
        index structures are not visible from here)."""
        if self._lite is not None and self._lite.path.exists():
            return sum(p.stat().st_size for p in self._lite.path.rglob("*") if p.is_file())
        return self.count * self.index_dim * 4

    def _versions(self) -> dict[str, str]:
        pymilvus = _pymilvus(self.lite)
        versions = {"pymilvus": pymilvus.__version__}
        if self.lite:
            import milvus_lite

            versions["milvus_lite"] = milvus_lite.__version__
        else:
            with self._rpc():
                versions["milvus_server"] = str(self._conn.get_server_version())
        return versions
