"""The backends the SDK can hold, for tests that run one scenario on each.

``store_url`` (see conftest) is the URL of an empty store: a SQLite file, a PostgreSQL
database, or, for ``"http"``, an Assay server (``assay serve`` in a thread, over a SQLite
file of its own) that ``LLMObs.enable(site=...)`` talks to through ``HttpBackend``. The
``http`` flavour is opt-in, test by test, with ``@on_every_backend``.
"""

from __future__ import annotations

import pytest

STORES = ["sqlite", "postgresql"]
EVERY_BACKEND = [*STORES, "http"]

on_every_backend = pytest.mark.parametrize("store_url", EVERY_BACKEND, indirect=True)
"""Runs a test that uses ``store_url`` (or ``llmobs``, ``backend``) on every backend."""
