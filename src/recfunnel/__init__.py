"""recfunnel: candidate retrieval then ranking, with honest evaluation."""

__version__ = "0.1.0"
