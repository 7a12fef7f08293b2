"""The backend interface against an Assay server, over HTTP (the remote SDK mode)."""

from __future__ import annotations

from assay.store.http.backend import HttpBackend

__all__ = ["HttpBackend"]
