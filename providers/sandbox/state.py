"""The sandbox's state: what it accepted in its own SQLite file, how it is steered in memory.

Jobs, their result files, the webhooks not sent yet and the call log are kept in
`SandboxConfig.state_file` (never the engine's database: the sandbox imitates
services outside it), so a sandbox restarted after a SIGKILL or a `make run` again
still answers for its jobs and sends the webhooks that were due; deleting the file
while the sandbox is stopped resets it. A job is written once, when accepted: its
phase follows from its timing on the wall clock. Faults and `/_sandbox/config`
changes are a test's steering, and a restart forgets them. How many jobs of each provider
were in flight at once at most (what a test of the engine's limits reads) is counted
in memory too.

Everything runs on one event loop and no handler awaits between reading and
changing this state, so it needs no lock.
"""

import contextlib
import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, ClassVar, TypeVar

from fastapi import Depends, Request
from pydantic import TypeAdapter

from engine.db.queries import load_queries
from providers.sandbox.config import SandboxConfig
from providers.sandbox.webhooks import Webhook, WebhookSender

QUERIES = load_queries(__name__.rpartition(".")[0])


class Phase(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True)
class Timing:
    """When work on a job starts and how it will end; its phase is computed when asked."""

    starts_at: float  # time.time(); later than the submission for a scheduled post
    latency: float
    ending: Phase | None  # SUCCEEDED or FAILED; None: the job never finishes

    def phase(self) -> Phase:
        elapsed = time.time() - self.starts_at
        if self.ending is not None and elapsed >= self.latency:
            return self.ending
        return Phase.QUEUED if elapsed < self.latency / 2 else Phase.RUNNING

    @property
    def finishes_at(self) -> float | None:
        """On the `time.time()` clock; None for a job that never finishes."""
        return None if self.ending is None else self.starts_at + self.latency

    @property
    def created_at(self) -> datetime:
        return datetime.fromtimestamp(self.starts_at, UTC)

    @property
    def completed_at(self) -> datetime:
        return self.created_at + timedelta(seconds=self.latency)


@dataclass
class JobSettings:
    """What `/_sandbox/config` changes; each applies to jobs submitted afterwards."""

    job_latency: float
    never_finish: bool = False
    fail_jobs: bool = False
    # Seconds an answer is held back after the call is handled and logged: a test
    # can kill its caller while the provider has acted but the caller doesn't know.
    response_delay: float = 0.0

    def timing(self, starts_in: float = 0.0) -> Timing:
        """How a job submitted now ends; it starts `starts_in` seconds from now (a
        scheduled post), so it is queued until then."""
        ending = None if self.never_finish else Phase.FAILED if self.fail_jobs else Phase.SUCCEEDED
        return Timing(time.time() + starts_in, self.job_latency, ending)


@dataclass(kw_only=True)
class Job:
    """One submitted job; each provider subclasses it with what its answers need."""

    provider: ClassVar[str]  # whose job it is, as a fault and the call log name it
    id: str
    timing: Timing

    def phase(self) -> Phase:
        return self.timing.phase()

    def webhooks(self, config: SandboxConfig) -> list[Webhook]:
        """What the provider sends once the job has finished, built when it is sent."""
        return []


@dataclass(frozen=True)
class MediaFile:
    """A result file a job names: `/_sandbox/files/<name>`."""

    name: str
    caption: str  # what an image shows: the prompt, a render's titles
    label: str  # the small print under it: which provider made it


@dataclass(frozen=True)
class Call:
    provider: str
    operation: str
    idempotency_key: str | None
    run_id: str | None
    method: str
    path: str
    status_code: int
    at: datetime

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "at": self.at.isoformat()}


@dataclass
class Fault:
    """The next `times` calls of one operation (None: any of the provider's) answer
    `status_code`."""

    provider: str
    operation: str | None
    status_code: int
    times: int = 1
    retry_after: float | None = None
    hard_cap: bool = False


J = TypeVar("J", bound=Job)


@dataclass
class SandboxState:
    config: SandboxConfig
    settings: JobSettings
    operations: frozenset[tuple[str, str]]  # (provider, operation) pairs a fault may name
    db: sqlite3.Connection
    webhooks: WebhookSender = field(init=False)
    faults: list[Fault] = field(default_factory=list)
    _adapters: dict[type[Job], TypeAdapter[Any]] = field(default_factory=dict)
    # Per provider: each job's (submitted, finishes) on the wall clock, and the most
    # in flight at once, as counted at each submit (a restart forgets them).
    _flights: dict[str, list[tuple[float, float | None]]] = field(default_factory=dict)
    most_in_flight: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.webhooks = WebhookSender(self.config.webhook_attempts, self.config.webhook_retry_delay)

    def add(self, job: Job, files: Sequence[MediaFile] = ()) -> None:
        """Keep `job` and the files it names; its webhooks go out when it finishes."""
        due = job.timing.finishes_at
        with self.db:
            self.db.execute(
                QUERIES["insert_job"],
                {
                    "kind": kind_of(type(job)),
                    "id": job.id,
                    "body": self._dump(job),
                    "webhook_due": due,
                },
            )
            self.db.executemany(QUERIES["insert_file"], [asdict(file) for file in files])
        if due is not None:
            self._schedule(job, due)
        submitted = time.time()
        self._flights.setdefault(job.provider, []).append((submitted, job.timing.finishes_at))
        count = self.in_flight(job.provider, submitted)
        self.most_in_flight[job.provider] = max(self.most_in_flight.get(job.provider, 0), count)

    def in_flight(self, provider: str, at: float) -> int:
        """Jobs of `provider` submitted and not finished at `at` (`time.time()`)."""
        return sum(
            1
            for submitted, finishes in self._flights.get(provider, [])
            if submitted <= at and (finishes is None or at < finishes)
        )

    def jobs(self) -> dict[str, dict[str, int]]:
        """Per provider: jobs submitted, in flight now, and the most in flight at once."""
        now = time.time()
        return {
            provider: {
                "submitted": len(self._flights.get(provider, [])),
                "in_flight": self.in_flight(provider, now),
                "most_in_flight": most,
            }
            for provider, most in sorted(self.most_in_flight.items())
        }

    def find(self, kind: type[J], job_id: str) -> J | None:
        row = self.db.execute(QUERIES["job"], {"kind": kind_of(kind), "id": job_id}).fetchone()
        return None if row is None else self._load(kind, row["body"])

    def resume(self, kinds: Iterable[type[Job]]) -> None:
        """Schedule again the webhooks a previous run of the sandbox had not sent."""
        for kind in kinds:
            for row in self.db.execute(QUERIES["webhooks_due"], {"kind": kind_of(kind)}):
                self._schedule(self._load(kind, row["body"]), row["webhook_due"])

    def file(self, name: str) -> MediaFile | None:
        row = self.db.execute(QUERIES["file"], {"name": name}).fetchone()
        return None if row is None else MediaFile(**row)

    def record(self, call: Call) -> None:
        with self.db:
            self.db.execute(QUERIES["insert_call"], {**asdict(call), "at": call.at.timestamp()})

    def calls(
        self, provider: str | None = None, operation: str | None = None, run_id: str | None = None
    ) -> list[Call]:
        filters = {"provider": provider, "operation": operation, "run_id": run_id}
        return [
            Call(**{**row, "at": datetime.fromtimestamp(row["at"], UTC)})
            for row in self.db.execute(QUERIES["calls"], filters)
        ]

    def count_calls(self, provider: str, since: datetime) -> int:
        row = self.db.execute(
            QUERIES["count_calls"], {"provider": provider, "since": since.timestamp()}
        ).fetchone()
        count: int = row["n"]
        return count

    def clear_calls(self) -> None:
        with self.db:
            self.db.execute(QUERIES["clear_calls"])

    def take_fault(self, provider: str, operation: str) -> Fault | None:
        for fault in self.faults:
            if fault.provider == provider and fault.operation in (None, operation):
                fault.times -= 1
                if fault.times <= 0:
                    self.faults.remove(fault)
                return fault
        return None

    def _schedule(self, job: Job, due: float) -> None:
        def sent() -> None:
            with self.db:
                self.db.execute(
                    QUERIES["webhooks_sent"], {"kind": kind_of(type(job)), "id": job.id}
                )

        self.webhooks.schedule(due, lambda: job.webhooks(self.config), sent)

    def _adapter(self, kind: type[Job]) -> TypeAdapter[Any]:
        if kind not in self._adapters:
            self._adapters[kind] = TypeAdapter(kind)
        return self._adapters[kind]

    def _dump(self, job: Job) -> str:
        return self._adapter(type(job)).dump_json(job).decode()

    def _load(self, kind: type[J], body: str) -> J:
        job = self._adapter(kind).validate_json(body)
        assert isinstance(job, kind)
        return job


def kind_of(kind: type[Job]) -> str:
    return kind.__name__


@contextlib.contextmanager
def opened_database(config: SandboxConfig) -> Iterator[sqlite3.Connection]:
    """`config.state_file`, created with its tables if new; in memory when it is None."""
    path = config.state_file
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(":memory:" if path is None else path)
    try:
        db.row_factory = dict_row
        # A SIGKILL loses nothing the OS has: only a power cut could lose the last writes.
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        db.executescript(QUERIES["create_schema"])
        yield db
    finally:
        db.close()


def dict_row(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> dict[str, Any]:
    return {column[0]: value for column, value in zip(cursor.description, row, strict=True)}


def new_id() -> str:
    return uuid.uuid4().hex


def state_of(request: Request) -> SandboxState:
    """FastAPI dependency: the state of the app serving this request."""
    state = request.app.state.sandbox
    assert isinstance(state, SandboxState)
    return state


Sandbox = Annotated[SandboxState, Depends(state_of)]
