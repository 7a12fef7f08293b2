"""API keys of ``assay serve``: made with a secret shown once, stored as its SHA-256 hash.

A key is ``assay_`` and 43 URL-safe characters from :func:`secrets.token_urlsafe` (256
bits). The store keeps its SHA-256 hash and its first characters (``prefix``, so people can
tell keys apart), never the key: a request's key is checked by looking its hash up, so no
stored secret is ever compared character by character. A plain hash (no salt, no slow
KDF) is enough because the key is random, not a password that could be guessed.

A key may be limited to some projects, by name: the names need not exist yet, so a key
can be made for a project before anything is sent to it.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from assay.errors import ApiKeyError, ApiKeyNotFoundError
from assay.store.sql.tables import api_keys

KEY_PREFIX = "assay_"
"""How every Assay key starts: recognisable in a config file or a secret scanner."""
_SHOWN = len(KEY_PREFIX) + 6
_NAME_LIMIT = 200


@dataclass(frozen=True, slots=True)
class ApiKeyInfo:
    """A stored API key, without its secret."""

    id: str
    name: str
    prefix: str
    """The key's first characters, such as ``assay_Zq3xW9``: enough to recognise it."""
    projects: tuple[str, ...] | None
    """The names of the projects the key may use; None for every project."""
    created_at: datetime
    last_used_at: datetime | None
    """When a request last came with it, to within a minute; None if never."""
    revoked_at: datetime | None
    """When it was revoked; a revoked key is refused."""

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


def hash_key(key: str) -> str:
    """The hex SHA-256 of a key, as stored."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _aware(moment: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes even for timezone-aware columns; they are UTC.
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def _info(row: Any) -> ApiKeyInfo:
    created = _aware(row.created_at)
    assert created is not None
    return ApiKeyInfo(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        projects=tuple(row.projects) if row.projects is not None else None,
        created_at=created,
        last_used_at=_aware(row.last_used_at),
        revoked_at=_aware(row.revoked_at),
    )


def _checked_projects(projects: Sequence[str] | None) -> tuple[str, ...] | None:
    if projects is None:
        return None
    if isinstance(projects, str):
        projects = [projects]
    names = tuple(dict.fromkeys(name.strip() for name in projects))
    if not names:
        raise ApiKeyError(
            "projects is empty: pass the names of the projects the key may use, "
            "or None for a key that may use every project"
        )
    if "" in names:
        raise ApiKeyError("A project name of an API key cannot be empty")
    return names


def create_api_key(
    engine: Engine, name: str, *, projects: Sequence[str] | None = None
) -> tuple[ApiKeyInfo, str]:
    """A new key named ``name``: its stored info, and the key itself (shown once).

    ``projects`` limits it to the projects of these names; None: every project.
    """
    name = name.strip()
    if not name or len(name) > _NAME_LIMIT:
        raise ApiKeyError(
            f"API key name {name[:60]!r} must be 1 to {_NAME_LIMIT} characters, e.g. 'ci'"
        )
    scope = _checked_projects(projects)
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    info = ApiKeyInfo(
        id=str(uuid.uuid4()),
        name=name,
        prefix=key[:_SHOWN],
        projects=scope,
        created_at=datetime.now(UTC),
        last_used_at=None,
        revoked_at=None,
    )
    taken = ApiKeyError(
        f"An API key named {name!r} already exists; revoke it first "
        f"(`assay keys revoke {name}`) or choose another name"
    )
    try:
        with engine.begin() as connection:
            existing = connection.execute(
                select(api_keys.c.id).where(
                    api_keys.c.name == name, api_keys.c.revoked_at.is_(None)
                )
            ).first()
            if existing is not None:
                raise taken
            connection.execute(
                insert(api_keys).values(
                    id=info.id,
                    name=name,
                    key_hash=hash_key(key),
                    prefix=info.prefix,
                    projects=list(scope) if scope is not None else None,
                    created_at=info.created_at,
                )
            )
    except IntegrityError as error:  # another process took the same name meanwhile
        raise taken from error
    return info, key


def list_api_keys(engine: Engine) -> list[ApiKeyInfo]:
    """Every key, revoked ones too, oldest first."""
    query = select(api_keys).order_by(api_keys.c.created_at, api_keys.c.id)
    with engine.connect() as connection:
        return [_info(row) for row in connection.execute(query)]


def find_api_key(engine: Engine, key: str) -> ApiKeyInfo | None:
    """The stored key this secret is, revoked or not; None for any other string."""
    if not key.startswith(KEY_PREFIX):
        return None  # not one of ours (ddtrace's placeholder keys): no query
    query = select(api_keys).where(api_keys.c.key_hash == hash_key(key))
    with engine.connect() as connection:
        row = connection.execute(query).first()
    return _info(row) if row is not None else None


def resolve_api_key(engine: Engine, reference: str) -> ApiKeyInfo:
    """The key a person means: a live key's name, an id, a unique id prefix (4 characters
    or more), or else the newest revoked key of that name."""
    reference = reference.strip()
    with engine.connect() as connection:

        def matching(*conditions: Any) -> list[ApiKeyInfo]:
            query = select(api_keys).where(*conditions)
            query = query.order_by(api_keys.c.created_at.desc(), api_keys.c.id)
            return [_info(row) for row in connection.execute(query)]

        found = matching(api_keys.c.name == reference, api_keys.c.revoked_at.is_(None))
        found = found or matching(api_keys.c.id == reference)
        if not found and len(reference) >= 4:
            found = matching(api_keys.c.id.startswith(reference, autoescape=True))
            if len(found) > 1:
                raise ApiKeyNotFoundError(
                    f"API key id prefix {reference!r} matches {len(found)} keys; "
                    "give more characters of the id"
                )
        found = found or matching(api_keys.c.name == reference)
    if not found:
        raise ApiKeyNotFoundError(
            f"No API key named {reference!r} or with that id; `assay keys list` shows them"
        )
    return found[0]


def revoke_api_key(engine: Engine, reference: str) -> tuple[ApiKeyInfo, bool]:
    """Revoke the key ``reference`` names (as :func:`resolve_api_key` reads it).

    Returns the key as now stored and whether this call revoked it (False: it already was).
    """
    info = resolve_api_key(engine, reference)
    with engine.begin() as connection:
        done = connection.execute(
            update(api_keys)
            .where(api_keys.c.id == info.id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=datetime.now(UTC))
        ).rowcount
        row = connection.execute(select(api_keys).where(api_keys.c.id == info.id)).one()
    return _info(row), done == 1


def record_api_key_use(engine: Engine, key_id: str, when: datetime) -> None:
    """Set the key's ``last_used_at`` (the server does it at most once a minute per key)."""
    with engine.begin() as connection:
        connection.execute(
            update(api_keys).where(api_keys.c.id == key_id).values(last_used_at=when)
        )
