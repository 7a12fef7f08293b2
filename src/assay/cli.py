"""The ``assay`` command: run the demo or a script, list and show stored experiments,
serve the store and manage the server's API keys.

A thin shell over the same functions a user calls from Python. Errors are translated here
and nowhere else: an :class:`~assay.errors.AssayError` or a usage error prints one line,
``error: ...``, on stderr and exits non-zero (2 for usage errors, 1 otherwise), never a
traceback. Tables go to stdout through rich; ``--json`` writes nothing but JSON there.
"""

from __future__ import annotations

import gc
import json
import os
import runpy
import sys
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from typer.core import TyperGroup

from assay._version import __version__
from assay.cli_compare import register as register_comparison_commands
from assay.cli_plan import plan as plan_command
from assay.cli_render import (
    api_key_json,
    api_keys_table,
    experiment_report,
    experiment_view,
    experiments_table,
    listed_experiment,
    listed_json,
    local_time,
    report_json,
    search_view,
)
from assay.config import (
    ASSAY_HOME,
    DATABASE_URL,
    EXECUTOR,
    PROGRESS,
    RESUME,
    SERVER_URL,
    Setting,
    server_url,
)
from assay.config import database_url as default_database_url
from assay.demo import DEMO_QUESTIONS, run_demo
from assay.errors import AssayError, ConfigurationError, QueryError
from assay.execution.executor import EXECUTORS
from assay.execution.progress import RichProgress, default_display
from assay.store import open_backend
from assay.store.backend import Backend
from assay.store.records import ExperimentFilter

if TYPE_CHECKING:
    from assay.store.sql.backend import SqlBackend


def _settings_epilog(*settings: Setting) -> str:
    # Help texts come from assay.config, where each setting is defined once.
    return "Settings:\n\n" + "\n".join(f"* `{s.env}`: {s.help}" for s in settings)


_STORE_EPILOG = _settings_epilog(ASSAY_HOME, DATABASE_URL)
_RUN_EPILOG = _settings_epilog(ASSAY_HOME, DATABASE_URL, PROGRESS, RESUME, EXECUTOR, SERVER_URL)
_RAY_ADDRESS = "RAY_ADDRESS"  # Ray's own: ray.init() with no address connects to it


class _AssayGroup(TyperGroup):
    """The root command: turns every expected failure into one ``error:`` line."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(
                args, prog_name, complete_var, standalone_mode, windows_expand_args, **extra
            )
        try:
            code = super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        except typer.TyperException as error:  # usage errors (exit code 2) and the like
            context = getattr(error, "ctx", None)
            hint = f" (see '{context.command_path} --help')" if context is not None else ""
            _fail(f"{error.format_message()}{hint}", error.exit_code)
        except QueryError as error:
            # The query and a caret under the place at fault: three lines that belong together.
            typer.echo(f"error: {error}", err=True)
            sys.exit(1)
        except AssayError as error:
            _fail(str(error), 1)
        except typer.Abort:
            _fail("aborted", 1)
        # Without standalone mode, an exit (--help, typer.Exit, Ctrl-C as 130) comes back
        # as its code instead of a SystemExit.
        if code == 130:
            _fail("interrupted", 130)
        sys.exit(code if isinstance(code, int) else 0)


def _fail(message: str, code: int) -> NoReturn:
    # One line, whatever the message: a multi-line error (one carrying a stack) keeps its
    # first line, which names the problem.
    lines = [line for line in message.strip().splitlines() if line.strip()]
    typer.echo(f"error: {lines[0] if lines else 'failed'}", err=True)
    sys.exit(code)


def _usage_error(message: str, *, param: str) -> NoReturn:
    raise typer.BadParameter(message, param_hint=param)


app = typer.Typer(
    cls=_AssayGroup,
    name="assay",
    help=(
        "Assay: self-hosted LLM experiments. Run a task over a dataset several times, "
        "score it, keep every result, then list and show them."
    ),
    epilog=_STORE_EPILOG,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Markdown reflows docstring paragraphs and shows `code` as code.
    rich_markup_mode="markdown",
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
experiments_app = typer.Typer(
    help="Stored experiments.",
    rich_markup_mode="markdown",
    epilog=_STORE_EPILOG,
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(experiments_app, name="experiments")
keys_app = typer.Typer(
    help="API keys of `assay serve`: made here, on the store, and sent by clients as "
    "`DD-API-KEY` or `Authorization: Bearer`.",
    rich_markup_mode="markdown",
    epilog=_STORE_EPILOG,
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(keys_app, name="keys")

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        metavar="URL",
        help="SQLAlchemy URL of the store (default: ASSAY_DATABASE_URL, else "
        "$ASSAY_HOME/assay.db), e.g. postgresql+psycopg://user@host/db.",
    ),
]


def _stdout() -> Console:
    # Made per call, so the console writes to whatever sys.stdout is now (tests swap it).
    # No markup or emoji: names and paths are the user's text, "[red]" and ":x:" included.
    return Console(soft_wrap=False, highlight=False, markup=False, emoji=False)


def _print_json(data: object) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


@contextmanager
def _backend() -> Iterator[Backend]:
    backend = open_backend()
    try:
        yield backend
    finally:
        backend.close()


def _help_when_bare(context: typer.Context) -> None:
    if context.invoked_subcommand is None:
        typer.echo(context.get_help())
        raise typer.Exit(0)


@app.callback()
def _root(
    context: typer.Context,
    version: Annotated[
        bool, typer.Option("--version", help="Print the version and exit.", is_eager=True)
    ] = False,
) -> None:
    if version:
        typer.echo(f"assay {__version__}")
        raise typer.Exit(0)
    _help_when_bare(context)


@experiments_app.callback()
def _experiments(context: typer.Context) -> None:
    _help_when_bare(context)


@keys_app.callback()
def _keys(context: typer.Context) -> None:
    _help_when_bare(context)


@app.command()
def version() -> None:
    """Print Assay's version."""
    typer.echo(f"assay {__version__}")


@app.command(epilog=_STORE_EPILOG)
def demo(
    runs: Annotated[int, typer.Option(min=1, help="How many times every question is asked.")] = 5,
    jobs: Annotated[int, typer.Option(min=1, help="How many calls run at once.")] = 8,
    records: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=len(DEMO_QUESTIONS),
            help=f"Use only the first N questions (default: all {len(DEMO_QUESTIONS)}).",
        ),
    ] = None,
) -> None:
    """Run the built-in demo: a noisy simulated model answers capital-city questions.

    Creates a small dataset in the project 'assay-demo', runs a multi-run experiment on
    it with evaluators of every metric type, and prints the summary. Fully offline: no
    model, key or network is used. Results go to the embedded store.
    """
    # A person is watching: show the bar, unless they set ASSAY_PROGRESS themselves.
    display = RichProgress() if PROGRESS.env not in os.environ else default_display()
    experiment = run_demo(runs=runs, jobs=jobs, records=records, display=display)
    assert experiment.id is not None
    console = _stdout()
    with _backend() as backend:
        report = experiment_report(backend, backend.get_experiment(experiment.id), run=None)
        location = backend.location
    console.print(experiment_view(report))
    console.print()
    console.print(f"Results are stored in {location}", soft_wrap=True)
    console.print(f"Experiment id: {experiment.id}", soft_wrap=True)
    console.print("Next, try:")
    for command in (
        f"assay show {experiment.id}",
        f"assay show {experiment.id} --run 2",
        "assay experiments list",
    ):
        console.print(f"  {command}", soft_wrap=True)
    console.print(f"Web page (served by `assay serve`): {experiment.url}", soft_wrap=True)


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    epilog=_RUN_EPILOG,
)
def run(
    file: Annotated[
        str, typer.Argument(metavar="FILE", help="The Python script to run (a .py file).")
    ],
    args: Annotated[
        list[str] | None,
        typer.Argument(metavar="ARGS", help="Arguments passed to the script as `sys.argv[1:]`."),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue the newest unfinished experiment of each name the script runs: "
            "only missing (record, run) pairs run. Sets ASSAY_RESUME=1 for the script.",
        ),
    ] = False,
    executor: Annotated[
        str | None,
        typer.Option(
            "--executor",
            metavar="|".join(EXECUTORS),
            help="Where the script's experiments compute their rows, unless the script says: "
            "threads in this process, or ray (Ray tasks). Sets ASSAY_EXECUTOR for the script.",
        ),
    ] = None,
    address: Annotated[
        str | None,
        typer.Option(
            "--address",
            help="The Ray cluster to run on with --executor ray (e.g. ray://head:10001 or "
            "head:6379); default: RAY_ADDRESS, else a local Ray. Sets RAY_ADDRESS.",
        ),
    ] = None,
) -> None:
    """Run a Python script as `__main__`, with a progress bar for its experiments.

    The script sees `sys.argv` as `[FILE, ARGS...]` and its own folder first on
    `sys.path`, as with `python FILE`. Put `--` before arguments that look like options
    of this command (e.g. `assay run eval.py -- --help`). An exception in the script
    prints its traceback and exits with status 1.
    """
    path = Path(file)
    if not path.exists():
        _usage_error(f"no such file {file!r}", param="FILE")
    if path.is_dir() or path.suffix != ".py":
        _usage_error(f"{file!r} is not a Python script (a .py file)", param="FILE")
    if executor is not None and executor not in EXECUTORS:
        _usage_error(
            f"unknown executor {executor!r}: use one of {', '.join(EXECUTORS)}", param="--executor"
        )
    if address is not None and (executor or EXECUTOR.value()) != "ray":
        _usage_error("it names a Ray cluster: add --executor ray", param="--address")
    script = str(path.resolve())
    saved_argv, saved_path = sys.argv[:], sys.path[:]
    forced_progress = PROGRESS.env not in os.environ
    # A script launched from the CLI is watched by a person: show the bar unless the
    # user set ASSAY_PROGRESS themselves.
    if forced_progress:
        os.environ[PROGRESS.env] = "1"
    overrides = {
        RESUME.env: "1" if resume else None,
        EXECUTOR.env: executor,
        _RAY_ADDRESS: address,
    }
    saved = {name: os.environ.get(name) for name, value in overrides.items() if value}
    for name in saved:
        os.environ[name] = str(overrides[name])
    sys.argv = [file, *(args or [])]
    sys.path.insert(0, str(path.resolve().parent))
    try:
        runpy.run_path(script, run_name="__main__")
    except Exception as error:  # SystemExit and Ctrl-C go on: they are exits, not errors
        sys.stderr.write(_script_traceback(error, script))
        sys.exit(1)
    finally:
        sys.argv = saved_argv
        sys.path[:] = saved_path
        if forced_progress:
            os.environ.pop(PROGRESS.env, None)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _script_traceback(error: BaseException, script: str) -> str:
    """The traceback from the script's first frame on, without this CLI and runpy."""
    frame = error.__traceback__
    while frame is not None and frame.tb_frame.f_code.co_filename != script:
        frame = frame.tb_next
    # No frame of the script (a SyntaxError): the exception alone names file and line.
    return "".join(traceback.format_exception(type(error), error, frame))


@experiments_app.command("list", epilog=_STORE_EPILOG)
def list_experiments(
    name: Annotated[str | None, typer.Option(help="Only experiments with this name.")] = None,
    project: Annotated[str | None, typer.Option(help="Only experiments of this project.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many, newest first.")] = 20,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON (a list of experiments) instead.")
    ] = False,
) -> None:
    """List stored experiments, newest first, with the summary of each evaluation."""
    with _backend() as backend:
        items = []
        project_id: str | None = None
        found_project = project is None
        if project is not None:
            found = backend.find_project(project)
            found_project = found is not None
            project_id = found.id if found is not None else None
        if found_project:
            where = ExperimentFilter(name=name, project_id=project_id, limit=limit)
            base = server_url()
            items = [
                listed_experiment(backend, info, url=f"{base}/llm/experiments/{info.id}")
                for info in backend.list_experiments(where)
            ]
        location = backend.location
    if as_json:
        _print_json([listed_json(item) for item in items])
        return
    console = _stdout()
    if not items:
        console.print(
            f"No experiments{_filters_text(name, project)} in {location}. "
            "Try `assay demo` to make one.",
            soft_wrap=True,
        )
        return
    console.print(experiments_table(items, title=f"Experiments in {location}"))


def _filters_text(name: str | None, project: str | None) -> str:
    parts = [f"named {name!r}" if name else "", f"in project {project!r}" if project else ""]
    text = " ".join(part for part in parts if part)
    return f" {text}" if text else ""


@app.command(epilog=_STORE_EPILOG)
def show(
    experiment: Annotated[
        str,
        typer.Argument(
            metavar="EXPERIMENT", help="An experiment id, a unique id prefix, or a name (newest)."
        ),
    ],
    run: Annotated[int | None, typer.Option("--run", help="Show only this run (1..runs).")] = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print JSON: experiment, summary, summary_evaluations, record_summaries, "
            "metrics (duration, tokens, cost).",
        ),
    ] = False,
) -> None:
    """Show one experiment: its header, the summary of each evaluation, and its runs."""
    with _backend() as backend:
        info = backend.resolve_experiment(experiment)
        iterations = [item.run_iteration for item in info.runs]
        if run is not None and run not in iterations:
            runs = f"runs {iterations[0]}..{iterations[-1]}" if iterations else "no runs"
            _usage_error(f"experiment {info.name!r} ({info.id[:8]}) has {runs}", param="'--run'")
        report = experiment_report(backend, info, run=run)
    if as_json:
        _print_json(report_json(report))
        return
    _stdout().print(experiment_view(report))


@app.command(epilog=_STORE_EPILOG)
def records(
    experiment: Annotated[
        str,
        typer.Argument(
            metavar="EXPERIMENT", help="An experiment id, a unique id prefix, or a name (newest)."
        ),
    ],
    query: Annotated[
        str,
        typer.Option(
            "--query",
            "-q",
            help="Datadog search syntax, e.g. '@multi_run_avg.@evaluations.custom.x:>0.5' "
            "or 'run_iteration:1 @trace.total_tokens:>1000'. Empty: every row.",
        ),
    ] = "",
    run: Annotated[
        int | None, typer.Option("--run", help="Search only this run's rows (1..runs).")
    ] = None,
    limit: Annotated[int, typer.Option(min=0, help="At most this many items.")] = 50,
    offset: Annotated[int, typer.Option(min=0, help="Skip this many items first.")] = 0,
    sort: Annotated[
        str | None,
        typer.Option(
            help="Sort by a column (duration, -total_tokens, ...) or, for records, "
            "a multi-run facet."
        ),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option("--json", help='Print JSON: {"total": N, "of": M, "items": [...]}.'),
    ] = False,
) -> None:
    """Search an experiment's rows (or, with @multi_run_ terms, its records)."""
    with _backend() as backend:
        info = backend.resolve_experiment(experiment)
        page = backend.search(info.id, query, run=run, limit=limit, offset=offset, sort=sort)
    if as_json:
        _print_json(
            {
                "total": page.total,
                "of": page.of,
                "multi_run": page.multi_run,
                "description": page.description,
                "items": page.items,
            }
        )
        return
    _stdout().print(search_view(info, page, offset=offset))


def _server_log_config() -> dict[str, Any]:
    # One readable line per event: uvicorn's startup lines, one per request (the app's own
    # access log, ``assay.server.access``), one per error.
    handler = {"class": "logging.StreamHandler", "formatter": "line", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "line": {
                "format": "%(asctime)s %(levelname)s %(message)s",
                "datefmt": "%Y-%m-%d %H:%M:%S",
            }
        },
        "handlers": {"line": handler},
        "loggers": {
            name: {"handlers": ["line"], "level": "INFO", "propagate": False}
            for name in ("uvicorn", "uvicorn.error", "assay")
        },
    }


@app.command(epilog=_STORE_EPILOG)
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    database_url: DatabaseUrl = None,
    require_auth: Annotated[
        bool,
        typer.Option(
            "--require-auth",
            help="Refuse requests without an API key on loopback too (beyond loopback, "
            "keys are always required).",
        ),
    ] = False,
    ingest_queue: Annotated[
        bool,
        typer.Option(
            "--ingest-queue/--no-ingest-queue",
            help="Answer ddtrace's posts once they are in the store's journal, and write "
            "them hundreds at a time: about three times the rate of small posts. Other "
            "processes see a post a moment after its answer; this server's API at once. "
            "--no-ingest-queue writes each post before answering it.",
        ),
    ] = True,
) -> None:
    """Serve the Experiments REST API over the store, until Ctrl-C.

    The API is Datadog's LLM Observability Experiments API: point an unmodified ddtrace
    client at it with `DD_LLMOBS_OVERRIDE_ORIGIN=http://HOST:PORT`. On a `--host` other
    than loopback, every request needs an API key (`assay keys create NAME`), sent as
    `DD_API_KEY`. Progress and errors are logged on stderr, one line each.
    """
    try:
        import uvicorn

        from assay.server import create_app
        from assay.server.auth import is_loopback
    except ImportError as error:
        raise ConfigurationError(
            f"assay serve needs the server extra: pip install 'assay[server]' ({error})"
        ) from error
    beyond_loopback = not is_loopback(host)
    required = require_auth or beyond_loopback
    # The app logs each request itself, and sums up ddtrace's posts (``assay.server.access``).
    server = create_app(
        database_url=database_url,
        require_auth=required,
        ingest_queue=ingest_queue,
        access_log=True,
    )
    store: SqlBackend = server.state.backend
    typer.echo(f"assay: serving the store at {store.location} on http://{host}:{port}", err=True)
    if required:
        why = f"{host} is reachable beyond this machine" if beyond_loopback else "--require-auth"
        live = sum(not key.revoked for key in store.list_api_keys())
        typer.echo(
            f"assay: every request needs an API key ({why}); this store has {live} live "
            "key(s), see `assay keys list`",
            err=True,
        )
        if not live:
            typer.echo(
                "assay: warning: no API key exists yet, so every request will be refused "
                "(401); create one with `assay keys create NAME`",
                err=True,
            )
    # A queued write holds a few hundred posts' objects at once: with the collector's
    # defaults, its young collections traced them (and everything loaded) hundreds of
    # times a write, a quarter of the writer's time. What is loaded by now stays.
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    uvicorn.run(server, host=host, port=port, log_config=_server_log_config(), access_log=False)


# API keys ---------------------------------------------------------------------------------


@contextmanager
def _sql_store(database_url: str | None) -> Iterator[SqlBackend]:
    # Keys live in the store itself, whatever backend the SDK would pick: always SQL.
    from assay.store.sql.backend import SqlBackend

    store = SqlBackend(database_url or default_database_url())
    try:
        yield store
    finally:
        store.close()


@keys_app.command("create", epilog=_STORE_EPILOG)
def create_key(
    name: Annotated[
        str, typer.Argument(metavar="NAME", help="A name to recognise the key by, e.g. 'ci'.")
    ],
    projects: Annotated[
        list[str] | None,
        typer.Option(
            "--project",
            metavar="PROJECT",
            help="Limit the key to this project (by name; repeat for several). "
            "Default: every project.",
        ),
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Create an API key and print it, once: only its hash is stored.

    The key alone goes to stdout, so `KEY=$(assay keys create ci)` captures it; what it
    is goes to stderr. A key limited with `--project` sees only those projects: the
    others are invisible to it. The projects need not exist yet.
    """
    with _sql_store(database_url) as store:
        info, key = store.create_api_key(name, projects=projects or None)
        missing = [p for p in info.projects or () if store.find_project(p) is None]
    scope = (
        "every project"
        if info.projects is None
        else "the project(s) " + ", ".join(repr(p) for p in info.projects)
    )
    typer.echo(key)
    typer.echo(f"Created API key {info.name!r} (id {info.id[:8]}) for {scope}.", err=True)
    for project in missing:
        typer.echo(
            f"note: no project named {project!r} exists yet; the key will see it once created",
            err=True,
        )
    typer.echo(
        "Copy the key now: it is not shown again. Clients send it as DD-API-KEY "
        "(DD_API_KEY=...) or as 'Authorization: Bearer ...'.",
        err=True,
    )


@keys_app.command("list", epilog=_STORE_EPILOG)
def list_keys(
    database_url: DatabaseUrl = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON (a list of keys, without secrets).")
    ] = False,
) -> None:
    """List the API keys, oldest first, revoked ones too."""
    with _sql_store(database_url) as store:
        keys = store.list_api_keys()
        location = store.location
    if as_json:
        _print_json([api_key_json(key) for key in keys])
        return
    console = _stdout()
    if not keys:
        console.print(
            f"No API keys in {location}. Create one with `assay keys create NAME`.",
            soft_wrap=True,
        )
        return
    console.print(api_keys_table(keys, title=f"API keys in {location}"))


@keys_app.command("revoke", epilog=_STORE_EPILOG)
def revoke_key(
    key: Annotated[
        str,
        typer.Argument(
            metavar="KEY", help="The key's name, its id, or a unique id prefix (4+ characters)."
        ),
    ],
    database_url: DatabaseUrl = None,
) -> None:
    """Revoke an API key: from now on, requests with it get 401. Its row is kept."""
    with _sql_store(database_url) as store:
        info, revoked_now = store.revoke_api_key(key)
    if revoked_now:
        typer.echo(f"Revoked API key {info.name!r} (id {info.id[:8]}, {info.prefix}…).")
        return
    assert info.revoked_at is not None
    typer.echo(
        f"API key {info.name!r} (id {info.id[:8]}) was already revoked on "
        f"{local_time(info.revoked_at, seconds=False)}."
    )


app.command("plan", epilog=_STORE_EPILOG)(plan_command)
register_comparison_commands(app, epilog=_STORE_EPILOG)


def main() -> None:
    """Entry point of the ``assay`` script and of ``python -m assay``."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
