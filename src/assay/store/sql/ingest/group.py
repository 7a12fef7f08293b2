"""Group commit: the batches of concurrent requests written many to a transaction.

A small post (ddtrace sends the metrics of about six records at a time) costs a
transaction, a dozen statements and a follow-up of its own when written alone, and on
SQLite concurrent writers queue for one lock anyway. So the server hands each request's
batches to an ``IngestWriter``: one thread that takes every job waiting, checks each one
(a job that fails its checks fails alone and writes nothing), writes all the others in
one transaction, runs one follow-up for the lot after the commit (on PostgreSQL; SQLite's
transactions are serialized and need none), and only then answers each request. A
request is still answered after its rows are committed, and the follow-up, where there
is one, still runs after that commit, so the guarantees of ``assay.store.sql.ingest``
hold as they are; they also hold between several server processes.

If the shared transaction fails (a value one store refuses, a race lost five times), each
job is written again on its own, so that the error reaches only the request that caused
it. On SQLite the writer copies the groups' pages from the write-ahead log into the
database after answering their requests (``checkpoint_wal``), as often as ``CheckpointPace``
lets it.

**With a queue** (``IngestWriter(queue=True)``; ``assay serve`` by default), a post
that came with its ``JournalEntry`` is answered once it is checked and stored in the
journal (``assay.store.sql.ingest.journal``): on SQLite by the event loop's own thread,
the posts of one turn of the loop together (``accept``), elsewhere by the writer thread.
A second thread, the applier, writes the journaled posts up to ``APPLY_AT`` at a time:
when that many wait, when none has come for ``LINGER_SECONDS``, when ``flush`` asks, and
when the writer stops; meanwhile posts go on being journaled and answered. A post
without an entry is written, as without a queue, after every queued post. A queued
post's answer counts what it brought (``IngestResult.queued``), not what was stored. A
post that fails when it is written stays in the journal with its error, and ``recover``
tries it again.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import weakref
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from assay.errors import ExperimentNotFoundError
from assay.store.sql.ingest import journal
from assay.store.sql.ingest.checkpoint import CheckpointPace, checkpoint_wal
from assay.store.sql.ingest.followup import adopt_pending, pending_span_ids, roll_up
from assay.store.sql.ingest.journal import Decoder, JournalEntry
from assay.store.sql.ingest.model import EventBatch, IngestError, IngestResult
from assay.store.sql.ingest.plan import ExperimentRef, Plan, plan_batch
from assay.store.sql.ingest.write import (
    WriteState,
    in_transaction,
    serializes_writers,
    stored_roots,
    write_plans,
)

logger = logging.getLogger("assay")

MAX_GROUP = 64
"""Jobs per transaction: enough to drain a burst from many clients, few enough that one
job's wait for the others stays short."""
MAX_REMEMBERED = 1_000
"""Experiments a writer remembers; more, and it forgets them all."""
IDLE_SECONDS = 5.0
"""A writer with nothing to do for this long ends its thread; the next job starts one."""
APPLY_AT = 256
"""Queued posts written in one transaction, at most. ddtrace's posts (6 records) shared
most index pages at a few hundred a transaction, and a read waits for one such write."""
LINGER_SECONDS = 0.02
"""With posts queued and none coming for this long, the writer writes them."""


@dataclass(slots=True)
class Ingested:
    """What one job stored: a result per experiment, and the experiments skipped."""

    results: dict[str, IngestResult] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)
    """Experiments that do not exist, when the job said to skip them (the span intake)."""


@dataclass(slots=True)
class Memory:
    """What a writer remembers between transactions, to spare a look-up per group: the
    experiments it has seen (their run count and dataset version never change), and
    their runs as of its last commit (a claim by another process is checked anew)."""

    experiments: dict[str, ExperimentRef] = field(default_factory=dict)
    runs: dict[str, dict[int, str]] = field(default_factory=dict)
    pending_runs: dict[str, dict[int, str]] = field(default_factory=dict)
    """The runs of the transaction in flight, kept by ``commit``."""

    def commit(self) -> None:
        self.runs = self.pending_runs
        if len(self.experiments) > MAX_REMEMBERED:
            self.experiments.clear()
            self.runs.clear()


@dataclass(slots=True)
class _Job:
    batches: Mapping[str, EventBatch]
    skip_unknown: bool
    future: Future[Ingested] = field(default_factory=Future)
    plans: list[Plan] = field(default_factory=list)
    outcome: Ingested = field(default_factory=Ingested)
    entry: JournalEntry | None = None
    """The post as sent, which lets a writer with a queue journal it."""
    seq: int | None = None
    """Its journal row, once journaled: deleted in the transaction that writes it."""
    planned: bool = False
    """Checked when it was journaled: its plans (and skipped experiments) stand."""


def write_batches(
    engine: Engine, batches: Mapping[str, EventBatch], *, skip_unknown: bool = False
) -> Ingested:
    """Write one job in the calling thread (what ``IngestWriter`` does for a group)."""
    job = _Job(batches, skip_unknown)
    _write_group(engine, [job])
    return job.future.result()


class IngestWriter:
    """One writer thread per store, fed by the request handlers (see the module docstring),
    and with a queue, a second thread that writes the queued posts.

    It holds its engine weakly: the server keeps writers in a registry keyed by engine,
    and a writer must not keep a closed store alive.
    """

    def __init__(self, engine: Engine, *, max_group: int = MAX_GROUP, queue: bool = False) -> None:
        self._engine = weakref.ref(engine)
        self.max_group = max_group
        self.queue = queue
        """Answer posts that come with a journal entry before writing them (not on an
        in-memory store, which has no journal)."""
        self.apply_at = APPLY_AT
        self.linger = LINGER_SECONDS
        self._lock = threading.Lock()
        self._condition = threading.Condition(self._lock)
        """Wakes the writer thread: a job, or stop."""
        self._due = threading.Condition(self._lock)
        """Wakes the thread that writes queued posts: one more, a flush, or stop."""
        self._jobs: list[_Job] = []
        self._backlog: list[_Job] = []
        """Journaled and answered, not written yet, oldest first."""
        self._flushes: list[Future[None]] = []
        self._thread: threading.Thread | None = None
        self._applier: threading.Thread | None = None
        self._stopping = False
        self._memory = Memory()
        self._applier_memory = Memory()
        self._pace = CheckpointPace()
        self._applier_pace = CheckpointPace()
        self._journal: Engine | None = None
        self._file: journal.JournalFile | None = None
        """The journal file the event loop's thread appends to (SQLite; see ``accept``)."""
        self._opening = threading.Lock()
        """Opens the journal once, whichever thread asks first."""
        self._turning = threading.Lock()
        """One loop's turn at a time is journaled (a process may run several loops)."""
        self._turns: dict[asyncio.AbstractEventLoop, list[tuple[_Job, asyncio.Future[Ingested]]]]
        self._turns = {}
        """Posts waiting for their event loop's turn to be journaled, by loop."""
        self._turn_memory = Memory()

    @property
    def queued(self) -> int:
        """Posts answered and not written yet (0 without a queue)."""
        return len(self._backlog)

    def submit(
        self,
        batches: Mapping[str, EventBatch],
        *,
        skip_unknown: bool = False,
        entry: JournalEntry | None = None,
    ) -> Future[Ingested]:
        """Queue one request's batches; the future is done once they are committed (to the
        journal, if this writer has a queue and the post came with its ``entry``).

        Its exception is what writing them alone would raise: ``IngestError``,
        ``ExperimentNotFoundError`` (unless ``skip_unknown``), or a database error.
        """
        job = _Job(batches, skip_unknown, entry=entry)
        self._enqueue(job)
        return job.future

    def _enqueue(self, job: _Job) -> None:
        with self._lock:
            self._jobs.append(job)
            if self._thread is None:
                # Started on demand and ended when idle: an app that is never shut down
                # (a test client used without ``with``) leaves no thread behind.
                self._thread = _start(self._run, "assay-ingest-writer")
            else:
                self._condition.notify()

    def flush(self) -> Future[None]:
        """A future done once every post answered so far is written: what a read must
        wait for to see them all."""
        future: Future[None] = Future()
        with self._lock:
            if not self._backlog:
                # Empty: a post leaves the backlog only after its rows are committed.
                future.set_result(None)
                return future
            self._flushes.append(future)
            self._due.notify()
        return future

    def stop(self) -> None:
        """Write what is queued and end the threads (a later ``submit`` starts them again)."""
        with self._lock:
            self._stopping = True
            thread = self._thread
            self._condition.notify()
        if thread is not None:
            thread.join()  # it hands its last posts over to the applier, or writes them
        with self._lock:
            applier = self._applier
            self._due.notify()
        if applier is not None:
            applier.join()
        with self._lock:
            self._stopping = False
        with self._turning, self._opening:
            journal_engine, self._journal = self._journal, None
            journal_file, self._file = self._file, None
        if journal_file is not None:
            journal_file.close()
        engine = self._engine()
        if journal_engine is not None and journal_engine is not engine:
            journal_engine.dispose()

    def recover(self, decode: Decoder) -> int:
        """Write the posts an earlier server answered and left in the journal (stopped
        before writing them, killed, or refused by the store); returns how many were
        written. Run it before serving: it writes in the calling thread."""
        engine = self._engine()
        if engine is None:
            raise RuntimeError("The store was closed")
        journal_engine = journal.open_journal(engine, create=False)
        if journal_engine is None:
            return 0
        try:
            return self._recover(engine, journal_engine, decode)
        finally:
            if journal_engine is not engine:
                journal_engine.dispose()

    def _recover(self, engine: Engine, journal_engine: Engine, decode: Decoder) -> int:
        with journal_engine.connect() as connection:
            left = list(journal.entries(connection))
        jobs = []
        for seq, entry in left:
            try:
                decoded = decode(entry)
            except Exception as error:
                logger.error("ingest journal: post %d cannot be read again: %s", seq, error)
                with journal_engine.begin() as connection:
                    journal.note_failure(connection, seq, error)
                continue
            jobs.append(_Job(decoded.batches, decoded.skip_unknown, seq=seq))
        memory = Memory()  # its own: a writer thread of this store may run meanwhile
        for start in range(0, len(jobs), self.apply_at):
            _write_queued(engine, journal_engine, jobs[start : start + self.apply_at], memory)
        written = 0
        for job in jobs:
            if job.future.exception() is None:
                written += 1
                for key in job.future.result().unknown:
                    logger.warning("ingest journal: post %s: no experiment %s", job.seq, key)
        if left:
            logger.info(
                "ingest journal: %d post(s) answered by an earlier server written, %d kept",
                written,
                len(left) - written,
            )
        return written

    def _run(self) -> None:
        behind = False  # a write was committed since the last checkpoint
        while True:
            with self._lock:
                if not self._jobs and not self._stopping:
                    wait = min(self._pace.due_in(), IDLE_SECONDS) if behind else IDLE_SECONDS
                    self._condition.wait(wait)
                group = self._jobs[: self.max_group]
                del self._jobs[: self.max_group]
                if not group and not behind:
                    self._thread = None
                    return
            engine = self._engine()
            if engine is None:
                for job in group:
                    job.future.set_exception(RuntimeError("The store was closed"))
                continue
            if not group:
                # A checkpoint the pace put off is done once it is due, or at once when
                # the writer stops, if no request came meanwhile.
                self._pace.run(functools.partial(checkpoint_wal, engine), due=True)
                behind = False
                continue
            try:
                wrote = self._step(engine, group)
            except Exception as error:
                # Not a request's error (those reach their futures): a fault of the writer
                # itself. Its group fails; the thread lives on for the next requests.
                logger.exception("the ingest writer failed on a group of %d", len(group))
                for job in group:
                    if not job.future.done():
                        job.future.set_exception(error)
                wrote = True
            if wrote and serializes_writers(engine):
                behind = not self._pace.run(functools.partial(checkpoint_wal, engine))
            del engine

    def _step(self, engine: Engine, group: list[_Job]) -> bool:
        """Journal the group and hand it to the applier, or write it (after the queued
        posts, which come first). Returns whether it wrote to the store."""
        journal_engine = self._journal_engine(engine) if self.queue else None
        if (
            journal_engine is not None
            and not self._stopping
            and all(job.entry is not None for job in group)
        ):
            append = functools.partial(_append_in, journal_engine)
            self._hand_over(_journal(engine, append, group, self._memory))
            return False
        self.flush().result()
        _write_group(engine, group, self._memory)
        return True

    def _hand_over(self, pairs: Sequence[tuple[_Job, _Job]]) -> None:
        """Give journaled posts to the applier, then answer them."""
        with self._lock:
            self._backlog.extend(write for _, write in pairs)
            if pairs and self._applier is None:
                self._applier = _start(self._apply, "assay-ingest-applier")
            elif pairs:
                self._due.notify()
        # Answered once in the backlog: a read that finds none queued (``flush``) must find
        # every answered post written.
        _answer_queued([job for job, _ in pairs])

    def _journal_engine(self, engine: Engine) -> Engine | None:
        with self._opening:
            if self._journal is None:
                self._journal = journal.open_journal(engine, create=True)
            return self._journal

    def _journal_file(self) -> journal.JournalFile | None:
        """The journal file the event loop may append to: with a queue, on a SQLite store
        (elsewhere, None: the writer thread journals, or there is no journal)."""
        if not self.queue or self._stopping:
            return None
        if self._file is not None:
            return self._file
        engine = self._engine()
        if engine is None:
            return None
        path = journal.journal_file(engine)
        if path is None or self._journal_engine(engine) is None:  # the table is made
            return None
        with self._opening:
            if self._file is None:
                self._file = journal.JournalFile(path)
            return self._file

    async def accept(
        self,
        batches: Mapping[str, EventBatch],
        *,
        skip_unknown: bool = False,
        entry: JournalEntry | None = None,
    ) -> Ingested:
        """``submit``, awaited in an event loop: what the server's requests call.

        With a queue on a SQLite store, a post that comes with its entry is journaled in
        the loop's own thread, with every post that came in the same turn of the loop, in
        one statement (``journal.JournalFile``). Handed to the writer thread, a group took
        4.7 ms, mostly waiting to get Python's lock back after each call into SQLite
        while the loop held it; in the loop, 1.6 ms. A look-up the check needs (an
        experiment not seen yet, the record order of a dataset version) then runs in the
        loop too, once.
        """
        if entry is None or self._journal_file() is None:
            submitted = self.submit(batches, skip_unknown=skip_unknown, entry=entry)
            return await asyncio.wrap_future(submitted)
        job = _Job(batches, skip_unknown, entry=entry)
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Ingested] = loop.create_future()
        with self._lock:
            turn = self._turns.setdefault(loop, [])
            turn.append((job, waiter))
            first = len(turn) == 1
        if first:
            # After the callbacks ready now: the other requests that came with this one.
            loop.call_soon(self._journal_turn, loop)
        return await waiter

    def _journal_turn(self, loop: asyncio.AbstractEventLoop) -> None:
        """Journal the posts of this loop's turn (see ``accept``), and answer them."""
        with self._lock:
            turn = self._turns.pop(loop, [])
        jobs = [job for job, _ in turn]
        with self._turning:
            engine = self._engine()
            file = self._journal_file()
            if engine is None or file is None:  # stopped meanwhile: the writer thread writes
                for job in jobs:
                    self._enqueue(job)
            else:
                self._hand_over(_journal(engine, file.append, jobs, self._turn_memory))
        for job, waiter in turn:
            _settle(waiter, job.future)

    def _apply(self) -> None:
        """The applier thread: writes the queued posts when ``apply_at`` of them wait, when
        none came for ``linger`` seconds, on a flush, and when the writer stops."""
        while True:
            with self._lock:
                while not (self._flushes or self._stopping or len(self._backlog) >= self.apply_at):
                    if not self._due.wait(self.linger if self._backlog else IDLE_SECONDS):
                        break
                due = len(self._backlog)
                applied = self._backlog[:due]
                flushes, self._flushes = self._flushes, []
                if not applied:
                    self._applier = None
            if not applied:
                for flush in flushes:
                    flush.set_result(None)
                return
            engine = self._engine()
            try:
                if engine is not None and self._journal is not None:
                    _write_queued(engine, self._journal, applied, self._applier_memory)
                    if serializes_writers(engine):
                        self._applier_pace.run(functools.partial(checkpoint_wal, engine))
            except Exception:
                # A fault of the writer itself: the posts stay in the journal, for the
                # next start to write.
                logger.exception("the ingest applier failed on %d queued posts", len(applied))
            finally:
                with self._lock:
                    del self._backlog[:due]
                for flush in flushes:
                    flush.set_result(None)
            del engine


def _start(target: Callable[[], None], name: str) -> threading.Thread:
    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    return thread


def _journal(
    engine: Engine,
    append: Callable[[Sequence[JournalEntry]], list[int]],
    jobs: Sequence[_Job],
    memory: Memory,
) -> list[tuple[_Job, _Job]]:
    """Check these jobs against the store, and journal those that pass with ``append``, in
    one transaction (a job that fails gets its error). Returns each journaled job with
    the job that will write it."""
    live = [job for job in jobs if job.future.set_running_or_notify_cancel()]
    try:
        experiments: dict[str, ExperimentRef | None] = dict(memory.experiments)
        with engine.connect() as connection:
            passed = [job for job in live if _check(connection, job, experiments)]
        memory.experiments = {key: ref for key, ref in experiments.items() if ref is not None}
        seqs = append([job.entry for job in passed if job.entry])
    except Exception as error:
        for job in live:
            if not job.future.done():
                job.future.set_exception(error)
        return []
    return [
        (
            job,
            _Job(
                job.batches,
                job.skip_unknown,
                plans=job.plans,
                outcome=Ingested(unknown=list(job.outcome.unknown)),
                seq=seq,
                planned=True,
            ),
        )
        for job, seq in zip(passed, seqs, strict=True)
    ]


def _append_in(journal_engine: Engine, entries: Sequence[JournalEntry]) -> list[int]:
    with journal_engine.begin() as connection:
        return journal.append(connection, entries)


def _settle(waiter: asyncio.Future[Ingested], future: Future[Ingested]) -> None:
    """Give ``waiter`` the outcome of ``future``, in the waiter's loop, once there is one."""

    def copy(done: Future[Ingested]) -> None:
        if waiter.cancelled():
            return
        error = done.exception()
        if error is not None:
            waiter.set_exception(error)
        else:
            waiter.set_result(done.result())

    if future.done():
        copy(future)
    else:
        loop = waiter.get_loop()
        future.add_done_callback(lambda done: loop.call_soon_threadsafe(copy, done))


def _answer_queued(jobs: Sequence[_Job]) -> None:
    """Answer journaled jobs with what each brought: nothing of it is stored yet."""
    for job in jobs:
        results = {
            plan.experiment.id: IngestResult(queued=len(plan.span_rows) + len(plan.metrics))
            for plan in job.plans
        }
        job.future.set_result(Ingested(results=results, unknown=job.outcome.unknown))


def _write_queued(
    engine: Engine, journal_engine: Engine, jobs: Sequence[_Job], memory: Memory
) -> None:
    """Write journaled jobs and delete their journal rows; a job that fails keeps its row,
    with its error."""
    _write_group(engine, jobs, memory)
    # In the store's own journal (PostgreSQL) the rows went with the write; beside it
    # (SQLite), they go now.
    if journal_engine is not engine:
        written = [job.seq for job in jobs if job.seq is not None and not job.future.exception()]
        with journal_engine.begin() as connection:
            journal.remove(connection, written)
    for job in jobs:
        error = job.future.exception()
        if error is None or job.seq is None:
            continue
        logger.error("ingest journal: post %d kept, as it could not be written: %s", job.seq, error)
        try:
            with journal_engine.begin() as connection:
                journal.note_failure(connection, job.seq, error)
        except SQLAlchemyError as failure:
            logger.warning("could not note the failure of journaled post %d: %s", job.seq, failure)


def _write_group(engine: Engine, jobs: Sequence[_Job], memory: Memory | None = None) -> None:
    """Write these jobs together; each future gets its outcome or its own error."""
    memory = Memory() if memory is None else memory
    live = [job for job in jobs if job.future.set_running_or_notify_cancel()]
    if not live:
        return
    try:
        written = in_transaction(
            engine, functools.partial(_plan_and_write, jobs=live, memory=memory)
        )
    except Exception as error:
        if len(live) > 1:
            # One job's bad value (or a lost race) must not fail the others: alone, each
            # gets the outcome or the error that is its own.
            for job in live:
                if not job.future.done():  # else it failed its own checks already
                    _write_alone(engine, job, memory)
            return
        live[0].future.set_exception(error)
        return
    memory.commit()
    if serializes_writers(engine):
        # Serialized (``in_transaction``): every other writer committed before this
        # transaction, which saw it, or will commit after, and see this one. The
        # follow-up's look-ups could find nothing; the traces were rolled up inside.
        for job in written:
            job.future.set_result(job.outcome)
        return
    try:
        in_transaction(engine, functools.partial(_follow_up, jobs=written))
    except Exception as error:
        # Committed, but the other half may still wait: the client retries on a 5xx, and
        # a re-posted span (recognised, not stored twice) looks for its metrics again.
        for job in written:
            job.future.set_exception(error)
        return
    for job in written:
        job.future.set_result(job.outcome)


def _write_alone(engine: Engine, job: _Job, memory: Memory) -> None:
    retry = _Job(job.batches, job.skip_unknown, seq=job.seq)  # checked anew
    _write_group(engine, [retry], memory)
    error = retry.future.exception()
    if error is not None:
        job.future.set_exception(error)
    else:
        job.future.set_result(retry.future.result())


def _plan_and_write(connection: Connection, jobs: Sequence[_Job], memory: Memory) -> list[_Job]:
    """Check every job (failing those that do not pass), then write the others."""
    experiments: dict[str, ExperimentRef | None] = dict(memory.experiments)
    written = [
        job
        for job in jobs
        # Done: failed its checks in an earlier attempt of this transaction.
        if not job.future.done() and (job.planned or _check(connection, job, experiments))
    ]
    # Each experiment's write ends by updating its row (the counters), which PostgreSQL
    # locks until the commit. Two transactions that lock two experiments in opposite
    # orders deadlock, so every transaction takes them in id order.
    state = WriteState(memory.runs)
    for experiment_id, members in _by_experiment(written).items():
        plans = [plan for _, plan in members]
        results = write_plans(connection, plans, state=state)
        for (job, _), result in zip(members, results, strict=True):
            job.outcome.results[experiment_id] = result
        # The metrics that wait for the spans just written move in this transaction: one
        # writer per store in this process means every earlier commit is visible here, so
        # after the commit only other processes' writes remain to be looked for.
        roots = state.roots.get(experiment_id)
        if roots:
            moved = adopt_pending(connection, experiment_id=experiment_id, roots=roots, count=False)
            state.written[experiment_id][1] += len(moved)
            _credit(members, experiment_id, moved)
        if serializes_writers(connection):
            # With no follow-up after the commit (``_write_group``), the traces touched
            # are rolled up here, seeing every span committed before.
            trace_ids = {trace_id for plan in plans for trace_id in plan.trace_ids}
            if trace_ids:
                roll_up(connection, experiment_id=experiment_id, trace_ids=trace_ids)
        state.count(connection)
    # Journaled posts leave the journal as they are written: never both, never neither.
    journal.remove(connection, [job.seq for job in written if job.seq is not None])
    memory.experiments = {key: ref for key, ref in experiments.items() if ref is not None}
    memory.pending_runs = state.runs
    return written


def _check(connection: Connection, job: _Job, experiments: dict[str, ExperimentRef | None]) -> bool:
    """Plan a job's batches; a job that fails its checks gets its error."""
    job.plans, job.outcome = [], Ingested()
    try:
        for key, batch in sorted(job.batches.items()):
            try:
                job.plans.append(plan_batch(connection, key, batch, known=experiments))
            except ExperimentNotFoundError:
                if not job.skip_unknown:
                    raise
                job.outcome.unknown.append(key)
    except (IngestError, ExperimentNotFoundError) as error:
        job.future.set_exception(error)
        return False
    return True


def _by_experiment(jobs: Sequence[_Job]) -> dict[str, list[tuple[_Job, Plan]]]:
    """Each experiment's plans with their jobs, experiments in id order (the lock order)."""
    found: dict[str, list[tuple[_Job, Plan]]] = defaultdict(list)
    for job in jobs:
        for plan in job.plans:
            found[plan.experiment.id].append((job, plan))
    return dict(sorted(found.items()))


def _follow_up(connection: Connection, jobs: Sequence[_Job]) -> None:
    """After the commit, what another process may have written meanwhile (see
    ``assay.store.sql.ingest``): spans of the metrics still pending, metrics now pending
    for the spans written, children of the traces touched. Usually two look-ups that
    find nothing, and one for children."""
    for experiment_id, plans in _by_experiment(jobs).items():
        pending = sorted({span_id for _, plan in plans for span_id, _ in plan.pending})
        roots = sorted({key.span_id for _, plan in plans for key in plan.span_keys if key.is_root})
        found = set(stored_roots(connection, experiment_id, pending))
        found.update(pending_span_ids(connection, experiment_id, roots))
        if found:
            moved = adopt_pending(connection, experiment_id=experiment_id, span_ids=sorted(found))
            _credit(plans, experiment_id, moved)
        trace_ids = {trace_id for _, plan in plans for trace_id in plan.trace_ids}
        if trace_ids:
            roll_up(connection, experiment_id=experiment_id, trace_ids=trace_ids)


def _credit(
    plans: Sequence[tuple[_Job, Plan]], experiment_id: str, moved: set[tuple[str, str]]
) -> None:
    """Count moved metrics in the answer of the request that left them pending, else of
    the one that brought their span."""
    left = set(moved)
    for job, plan in plans:
        mine = plan.pending & left
        if mine:
            result = job.outcome.results[experiment_id]
            result.evaluations += len(mine)
            result.pending -= len(mine)
            plan.pending -= mine
            left -= mine
    for job, plan in plans:
        roots = {key.span_id for key in plan.span_keys if key.is_root}
        mine = {item for item in left if item[0] in roots}
        if mine:
            job.outcome.results[experiment_id].evaluations += len(mine)
            left -= mine
