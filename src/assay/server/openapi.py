"""The server's OpenAPI document, as committed in ``docs/openapi.json``.

The app serves it at ``/openapi.json``; the repository keeps a copy so that a route
change shows up in review as a change of the document. After changing a route, write it
again with::

    python -m assay.server.openapi > docs/openapi.json

A test fails, saying this, while the committed file differs from what the app serves.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from assay.server.app import create_app
from assay.store.sql.backend import SqlBackend

COMMAND = "python -m assay.server.openapi > docs/openapi.json"
"""How to write ``docs/openapi.json`` again."""


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document of ``create_app()``, built over an empty in-memory store."""
    backend = SqlBackend("sqlite://")
    try:
        document: dict[str, Any] = create_app(backend=backend).openapi()
    finally:
        backend.close()
    return document


def openapi_text(document: dict[str, Any] | None = None) -> str:
    """``document`` (default: :func:`openapi_document`) as the committed file holds it:
    sorted keys and two-space indents, so that a change is a small diff."""
    found = openapi_document() if document is None else document
    return json.dumps(found, indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    sys.stdout.write(openapi_text())
