"""The Assay server: Datadog's LLM Observability Experiments API over Assay's store.

``create_app()`` builds the FastAPI app; ``assay serve`` runs it with uvicorn.
"""

from __future__ import annotations

from assay.server.app import create_app

__all__ = ["create_app"]
