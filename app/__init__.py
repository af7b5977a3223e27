"""RetNet Service: the HTTP API, configuration, persistence and storage (no torch import here)."""

__version__ = "0.1.0"
