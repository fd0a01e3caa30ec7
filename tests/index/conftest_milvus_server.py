"""A real Milvus 2.x standalone server for the index tests, without containers.

Imported by the test modules that use it (``milvus_server_uri = conftest_milvus_server.milvus_server_uri``;
not a conftest.py, so the server starts only in a session that runs one of them): once per session
(it answers 3-20 s after it starts on 2 cores, plus ~9 s the first time on a machine to unpack the
binaries into ~/.cache/recfunnel), with its config, data and logs under the session's temp folder
(the data is removed at the end, the logs stay) and every port a free one, stopped by its PID.

The server is the PyPI package ``milvus`` (2.3.5, the "embedded Milvus" standalone binary; stdlib
only, see :mod:`recfunnel.bench.milvus_server`). Without it the tests are skipped, saying how to
install it: ``pip install 'milvus==2.3.5'`` into the venv, or into another venv named by
``MILVUS_SERVER_PYTHON``.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from recfunnel.bench.milvus_server import MilvusServer, MilvusServerUnavailable, server_python


@pytest.fixture(scope="session")
def milvus_server_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``http://127.0.0.1:PORT`` of a Milvus server shared by the session's tests (each test uses
    collections of its own names and drops them)."""
    pytest.importorskip("pymilvus", reason="the milvus backend needs `pip install 'recfunnel[milvus]'`")
    try:
        python = server_python()
    except MilvusServerUnavailable as exc:
        pytest.skip(f"no Milvus server to test against: {exc}")
    folder = tmp_path_factory.mktemp("milvus-server")
    server = MilvusServer(folder, python)
    server.start()  # raises with the server's log tail when it does not come up
    try:
        yield server.uri
    finally:
        server.stop()
        shutil.rmtree(folder / "data", ignore_errors=True)  # ~300 MB (etcd's WAL, the message log); logs stay
