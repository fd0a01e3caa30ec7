"""Errors that name the input at fault: file, line, column, value, and what would be valid."""

from __future__ import annotations

from pathlib import Path

from recfunnel.errors import RecfunnelError


class DataError(RecfunnelError, ValueError):
    """Bad input data. The message names file, line (1-based) and column where known."""

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        column: str | int | None = None,
        value: object = None,
        expected: str | None = None,
    ) -> None:
        self.path = Path(path) if path is not None else None
        self.line = line
        self.column = column
        self.value = value
        self.expected = expected
        where = ""
        if path is not None:
            where = str(path)
            if line is not None:
                where += f":{line}"
            if column is not None:
                where += f" (column {column!r})"
            where += ": "
        text = where + message
        if value is not None:
            text += f"; got {value!r}"
        if expected:
            text += f"; expected {expected}"
        super().__init__(text)
