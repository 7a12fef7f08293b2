"""Where experiments are kept: one backend interface, a SQL and an HTTP implementation."""

from __future__ import annotations

from assay.config import API_KEY, APP_KEY, REMOTE_API_KEY, REMOTE_URL, database_url, is_server_url
from assay.errors import ConfigurationError
from assay.store.backend import Backend


def open_backend(
    url: str | None = None, *, api_key: str | None = None, app_key: str | None = None
) -> Backend:
    """The backend at ``url``: an Assay server for an ``http(s)://`` URL, else a SQL store.

    Default: the server at ``ASSAY_URL`` when it is set, else the store at
    ``ASSAY_DATABASE_URL`` or ``~/.assay/assay.db``. A server gets ``api_key`` (default
    ``ASSAY_API_KEY``, else ``DD_API_KEY``) and ``app_key`` (default ``DD_APP_KEY``).
    """
    remote = REMOTE_URL.value()
    if not url and remote and not is_server_url(remote):
        raise ConfigurationError(
            f"{REMOTE_URL.env} {remote!r} is not the URL of an Assay server; write it as "
            "http://host:port or https://host, or unset it to use the local store"
        )
    chosen = url or remote or database_url()
    if is_server_url(chosen):
        from assay.store.http import HttpBackend

        return HttpBackend(
            chosen,
            api_key=api_key if api_key is not None else REMOTE_API_KEY.value() or API_KEY.value(),
            app_key=app_key if app_key is not None else APP_KEY.value(),
        )
    from assay.store.sql.backend import SqlBackend

    return SqlBackend(chosen)


__all__ = ["Backend", "open_backend"]
