"""The root of recfunnel's own errors: the CLI turns any of them into one line that says what is
valid (a traceback only with ``--debug``). Every layer's error class derives from
:class:`RecfunnelError` (``DataError``, ``ArtifactError``, ``CheckpointError``, ...)."""

from __future__ import annotations


class RecfunnelError(Exception):
    """An error whose message is meant for the user: what was wrong and what would be valid."""


class ConfigError(RecfunnelError, ValueError):
    """A configuration (model name, hyper-parameter, run option) that is not valid."""
