"""Settings, defined once: name, default, environment variable and help.

The CLI help, the SDK and the docs all read these definitions, so a setting is described
in exactly one place.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Setting:
    """One setting: where it comes from and what it means."""

    name: str
    env: str
    default: str
    help: str

    def value(self) -> str:
        """The environment's value, or the default when unset or empty."""
        return os.environ.get(self.env) or self.default


ASSAY_HOME = Setting(
    name="home",
    env="ASSAY_HOME",
    default=str(Path("~/.assay")),
    help="Folder of the embedded store; the database is assay.db inside it.",
)
DATABASE_URL = Setting(
    name="database_url",
    env="ASSAY_DATABASE_URL",
    default="",
    help="SQLAlchemy URL of the store; overrides ASSAY_HOME (e.g. postgresql+psycopg://host/db).",
)
SERVER_URL = Setting(
    name="server_url",
    env="ASSAY_SERVER_URL",
    default="http://127.0.0.1:8000",
    help="Base URL of `assay serve`, used to build experiment and dataset links.",
)
PROGRESS = Setting(
    name="progress",
    env="ASSAY_PROGRESS",
    default="auto",
    help="Progress bar while an experiment runs: auto (when stderr is a terminal), 1 or 0.",
)
PROJECT_NAME = Setting(
    name="project_name",
    env="DD_LLMOBS_PROJECT_NAME",
    default="default-project",
    help="Project of datasets and experiments when LLMObs.enable() is given none.",
)
SITE = Setting(
    name="site",
    env="DD_SITE",
    default="",
    help="Datadog-style site; only the URL of an Assay server selects a remote store.",
)
API_KEY = Setting(name="api_key", env="DD_API_KEY", default="", help="API key (remote stores).")
APP_KEY = Setting(name="app_key", env="DD_APP_KEY", default="", help="App key (remote stores).")
REMOTE_URL = Setting(
    name="url",
    env="ASSAY_URL",
    default="",
    help="URL of an Assay server (`assay serve`) to keep results on instead of the local "
    "store, e.g. http://assay.internal:8000; the SDK and the CLI's reading commands use it.",
)
REMOTE_API_KEY = Setting(
    name="remote_api_key",
    env="ASSAY_API_KEY",
    default="",
    help="API key sent to the server at ASSAY_URL (default: DD_API_KEY); make one on the "
    "server with `assay keys create NAME`.",
)

RESUME = Setting(
    name="resume",
    env="ASSAY_RESUME",
    default="0",
    help="1: experiment.run() resumes the latest unfinished experiment of the same name "
    "(what `assay run --resume` sets).",
)

EXECUTOR = Setting(
    name="executor",
    env="ASSAY_EXECUTOR",
    default="threads",
    help="Where experiment.run() computes rows when not told: threads (this process) or "
    "ray (tasks on the Ray cluster of ray.init(), RAY_ADDRESS, or a local one); what "
    "`assay run --executor` sets.",
)

SETTINGS: tuple[Setting, ...] = (
    ASSAY_HOME,
    DATABASE_URL,
    SERVER_URL,
    PROGRESS,
    RESUME,
    EXECUTOR,
    PROJECT_NAME,
    SITE,
    API_KEY,
    APP_KEY,
    REMOTE_URL,
    REMOTE_API_KEY,
)


def home_dir() -> Path:
    """The folder that holds the embedded store."""
    return Path(ASSAY_HOME.value()).expanduser()


def database_url() -> str:
    """The store's URL: ``ASSAY_DATABASE_URL``, else SQLite at ``$ASSAY_HOME/assay.db``."""
    explicit = DATABASE_URL.value()
    if explicit:
        return explicit
    return f"sqlite:///{home_dir() / 'assay.db'}"


def is_server_url(text: str) -> bool:
    """Whether ``text`` is the URL of an Assay server (http or https), not a store's URL."""
    return text.startswith(("http://", "https://"))


def server_url(store: str | None = None) -> str:
    """Base URL of the web UI, without a trailing slash.

    ``ASSAY_SERVER_URL`` when set; else the Assay server the results are kept on (``store``
    when it is a server's URL, else ``ASSAY_URL``); else ``http://127.0.0.1:8000``.
    """
    if os.environ.get(SERVER_URL.env):
        return SERVER_URL.value().rstrip("/")
    remote = store if store is not None and is_server_url(store) else REMOTE_URL.value()
    return (remote or SERVER_URL.default).rstrip("/")
