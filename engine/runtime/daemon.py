"""The worker loop: claim runs with work, execute them, keep their leases, drain on stop."""

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from datetime import timedelta

import psycopg

from engine.db.connections import Pool, connect, listen_url
from engine.db.queries import QUERIES
from engine.db.status import Status
from engine.observability import sd_notify
from engine.observability.logs import run_context
from engine.observability.telemetry import DISABLED, Telemetry
from engine.runtime import schedules, workers
from engine.runtime.channels import Channel
from engine.runtime.claims import Claim, claim_params
from engine.runtime.claims import load_claims as _load_claims
from engine.runtime.executor import Executor
from engine.runtime.notifications import Notifier
from engine.runtime.retention import prune
from engine.runtime.workflow import Workflow
from engine.settings import Settings

log = logging.getLogger(__name__)

VERSION_REPORT_INTERVAL = 60.0  # seconds between reports of runs left to other workers
# Seconds between attempts to re-establish LISTEN: polling covers the gap.
RECONNECT_FIRST, RECONNECT_MAX = 0.2, 5.0
# Seconds at least between two firing passes of a daemon: what another daemon's pass
# has locked is not asked for again at once.
PASS_SPACING = 0.05
SCHEDULES_CHANNEL = "orchestrator_schedules_v1"  # a schedule created or resumed
NOTIFICATIONS_CHANNEL = "orchestrator_notifications_v1"  # a notification recorded
CHANNELS = (
    "orchestrator_runs_v1",
    "orchestrator_approvals_v1",
    "orchestrator_events_v1",
    SCHEDULES_CHANNEL,
    NOTIFICATIONS_CHANNEL,
)
# Seconds past a timer's due time to claim at, so that the claim's NOW() has passed it.
TIMER_SLACK = 0.002


class Daemon:
    def __init__(
        self,
        url: str,
        pool: Pool,
        settings: Settings,
        workflows: dict[str, Workflow],
        telemetry: Telemetry = DISABLED,
        channels: Sequence[Channel] = (),
    ) -> None:
        self._url = url
        self._pool = pool
        self._settings = settings
        self._worker_id = settings.worker_id
        self._telemetry = telemetry
        self._executor = Executor(pool, settings, workflows, telemetry)
        self._notifier = Notifier(pool, settings, channels, telemetry)
        self._lease_ttl = timedelta(seconds=settings.lease_ttl)
        self._held: dict[str, tuple[asyncio.Task[None], int]] = {}
        self._versions = workflow_versions(workflows)
        self._beat = workers.beat_params(settings, self._versions)
        self._wake = asyncio.Event()
        self._backlog = False
        # The earliest timer not yet due (loop time), learnt at start, after each
        # poll and whenever a run of ours starts sleeping (`_timers_moved`).
        self._next_timer: float | None = None
        self._timers_stale = True
        self._timers_moved = asyncio.Event()
        self._schedules_due = 0.0  # time.monotonic() of the next firing pass
        self._gates_due = 0.0  # time.monotonic() of the next pass over gate deadlines
        self.last_tick = time.monotonic()
        self.listening = not settings.listen  # True once LISTEN is up (or not wanted)
        # The loop turns at least every poll interval; a loop this late is stuck.
        self.stale_after = max(3 * settings.poll_interval, 10.0)

    async def serve(self, stop: asyncio.Event) -> None:
        """Work until `stop` is set, then drain. A dead side task stops the daemon loudly."""
        extra = {"worker_id": self._worker_id}
        log.info("daemon started", extra={"action": "daemon_started", **extra})
        async with asyncio.TaskGroup() as side:
            side_tasks = [
                side.create_task(self._heartbeat()),
                side.create_task(self._watch_versions()),
                side.create_task(self._notifier.serve()),
            ]
            if self._settings.listen:
                side_tasks.append(side.create_task(self._listen()))
            if self._settings.prune_interval:
                side_tasks.append(side.create_task(self._prune_on_schedule()))
            if self._telemetry.enabled:
                side_tasks.append(side.create_task(self._count_runs()))
            sd_notify.ready()
            await self._work(stop)
            sd_notify.stopping()
            for task in side_tasks:
                task.cancel()
        await self._forget()
        log.info("daemon stopped", extra={"action": "daemon_stopped", **extra})

    async def _work(self, stop: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as runs:
            while not stop.is_set():
                self.last_tick = time.monotonic()
                sd_notify.watchdog()
                self._wake.clear()
                await self._fire_schedules()
                await self._time_out_gates()
                free = self._settings.concurrency - len(self._held)
                claims = await self._claim(free) if free > 0 else []
                # Claim again when a slot frees if work may have been left behind:
                # a full batch, or a wake-up (a NOTIFY, the poll) with no slot free.
                self._backlog = len(claims) == free
                for claim in claims:
                    task = runs.create_task(self._execute(claim), name=claim.run_id)
                    self._held[claim.run_id] = (task, claim.epoch)
                await self._sleep(stop)
            await self._drain()

    async def _sleep(self, stop: asyncio.Event) -> None:
        """Until a NOTIFY, a freed slot, a stop request, the next timer's due time, a
        schedule's next fire time or the poll interval. A run of ours starting to sleep
        only re-arms the wait."""
        loop = asyncio.get_running_loop()
        # Re-arming never delays the poll; a firing pass is due by time.monotonic().
        poll_at = loop.time() + min(
            self._settings.poll_interval, max(0.0, self._schedules_due - time.monotonic())
        )
        while True:
            self._timers_moved.clear()  # set while learning: the wait below ends at once
            if self._timers_stale:
                await self._learn_next_timer()
            wake_at = poll_at if self._next_timer is None else min(poll_at, self._next_timer)
            timeout = max(0.0, wake_at - loop.time())
            waiters = [
                asyncio.ensure_future(self._wake.wait()),
                asyncio.ensure_future(stop.wait()),
                asyncio.ensure_future(self._timers_moved.wait()),
            ]
            try:
                done, _ = await asyncio.wait(
                    waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                for waiter in waiters:
                    waiter.cancel()
            if not done:  # the poll or a timer: other daemons may have set timers since
                self._timers_stale = True
                self._gates_due = 0.0  # and a gate's deadline may be what fell due
                return
            if self._wake.is_set() or stop.is_set():
                return

    async def _learn_next_timer(self) -> None:
        """When the earliest timer not yet due falls due (one index entry; by the
        server's clock, so a skewed host clock does not shift it)."""
        self._timers_stale = False  # before reading: a run that starts sleeping meanwhile sets it
        try:
            async with self._pool.connection() as conn:
                row = await (await conn.execute(QUERIES["next_timer"])).fetchone()
        except psycopg.OperationalError:
            # The poll covers it (a timer gone by must not make the wait zero); try
            # again at the next wait.
            self._next_timer, self._timers_stale = None, True
            return
        seconds = row["seconds"] if row is not None else None
        loop = asyncio.get_running_loop()
        self._next_timer = None if seconds is None else loop.time() + seconds + TIMER_SLACK

    async def _fire_schedules(self) -> None:
        """Fire the schedules that are due, and note when the next pass is: at the
        earliest fire time, at least every poll interval (a held start may be free)."""
        if time.monotonic() < self._schedules_due:
            return
        wait = self._settings.poll_interval
        try:
            async with self._pool.connection() as conn:
                now, due_at = await schedules.next_due(conn)
                fire = due_at is not None and due_at <= now
                if fire:
                    fired = await schedules.fire_due(conn)
                    now, due_at = fired.now, fired.next_due
        except psycopg.Error as error:  # the next pass tries again; the daemon goes on
            log.warning("firing schedules failed: %s", error, extra={"action": "schedules_failed"})
        else:
            wait = schedules.wait_for(now, due_at, wait)
            if fire:  # still due: another daemon's pass holds it, or more is owed
                wait = max(wait, PASS_SPACING)
        self._schedules_due = time.monotonic() + wait

    async def _time_out_gates(self) -> None:
        """Give the system's answer at the gates whose deadline has passed (the claim
        then resumes them): when a timer or deadline falls due, and at least every
        poll interval however busy the daemon is."""
        if time.monotonic() < self._gates_due:
            return
        self._gates_due = time.monotonic() + self._settings.poll_interval
        try:
            async with self._pool.connection() as conn:
                answered = (await conn.execute(QUERIES["time_out_gates"])).rowcount
        except psycopg.Error as error:  # the next pass tries again; the daemon goes on
            log.warning("timing out gates failed: %s", error, extra={"action": "gates_failed"})
            return
        if answered:
            log.info("gates timed out", extra={"action": "gates_timed_out", "gates": answered})

    async def _claim(self, limit: int) -> list[Claim]:
        try:
            async with self._pool.connection() as conn:
                started = time.perf_counter()
                cursor = await conn.execute(
                    QUERIES["claim_runs"],
                    claim_params(limit, self._worker_id, self._lease_ttl, self._versions),
                    binary=True,  # checkpoints' blobs as bytes, as LangGraph reads them
                )
                claims, unloadable = await _load_claims(cursor)
                if self._telemetry.enabled:
                    self._telemetry.claim_duration.record(time.perf_counter() - started)
        except psycopg.OperationalError as error:
            log.warning("claim failed: %s", error, extra={"action": "claim_failed"})
            return []
        for held, why in unloadable:
            with contextlib.suppress(psycopg.OperationalError):  # its lease expires instead
                await self._executor.fail_unloadable(held, why)
        if unloadable:
            self._wake.set()  # its slot is free again, and the batch may have been full
        return claims

    async def _execute(self, claim: Claim) -> None:
        # Each run executes in its own task: everything logged in it names the run.
        run_context.set({"run_id": claim.run_id, "project": claim.project, "epoch": claim.epoch})
        log.info("run claimed", extra={"action": "run_claimed"})
        # Claim again when this run is done only if there may be work: a backlog,
        # a provider event that came while it ran (no NOTIFY will repeat it), or
        # an error. Otherwise NOTIFY and the poll cover it, and a claim would be
        # two wasted round trips per run.
        left_in: str | None = None
        try:
            left_in = await self._executor.execute(claim)
        except asyncio.CancelledError:
            # Shutdown (or a lost lease): give the run back at once instead of
            # making the next worker wait for the lease to expire.
            with contextlib.suppress(psycopg.Error):
                await self._executor.requeue(claim)
            log.info("run released", extra={"action": "run_released"})
            raise
        except Exception as error:  # a run's failure must not stop the worker
            log.exception("run crashed the executor: %s", error, extra={"action": "executor_error"})
        finally:
            self._held.pop(claim.run_id, None)
            if self._backlog or left_in in (None, Status.WAITING_PROVIDER):
                self._wake.set()
            if left_in == Status.WAITING_TIMER:
                self._timers_stale = True
                self._timers_moved.set()

    async def _drain(self) -> None:
        tasks = [task for task, _ in self._held.values()]
        if not tasks:
            return
        log.info("draining %d runs", len(tasks), extra={"action": "drain_started"})
        _, unfinished = await asyncio.wait(tasks, timeout=self._settings.shutdown_grace)
        if unfinished:
            log.info(
                "shutdown grace over; cancelling %d runs",
                len(unfinished),
                extra={"action": "drain_cancelled", "runs": len(unfinished)},
            )
        for task in unfinished:
            task.cancel()
        await asyncio.gather(*unfinished, return_exceptions=True)

    async def _heartbeat(self) -> None:
        """Renew the leases of the runs held and this worker's row, now and every
        lease_ttl/3: one statement. Until one beat gets through, each begins the row anew."""
        interval = self._settings.lease_ttl / 3
        starting = True
        while True:
            held = dict(self._held)
            try:
                async with self._pool.connection() as conn:
                    cursor = await conn.execute(
                        QUERIES["heartbeat"],
                        {
                            **self._beat,
                            "starting": starting,
                            "run_ids": list(held),
                            "epochs": [epoch for _, epoch in held.values()],
                            "lease_ttl": self._lease_ttl,
                            "running": Status.RUNNING,
                        },
                    )
                    kept = {row["run_id"] for row in await cursor.fetchall()}
            except psycopg.OperationalError as error:
                log.warning("heartbeat failed: %s", error, extra={"action": "heartbeat_failed"})
            else:
                starting = False
                for run_id in held.keys() - kept:
                    task, _ = held[run_id]
                    if not task.done():
                        log.warning(
                            "lease lost; stopping run",
                            extra={"action": "lease_lost", "run_id": run_id},
                        )
                        task.cancel()
            await asyncio.sleep(interval)

    async def _forget(self) -> None:
        """A clean stop takes this worker's row away: it is not gone, it stopped."""
        params = {"worker_id": self._worker_id, "pid": self._beat["pid"]}
        try:
            async with self._pool.connection() as conn:
                await conn.execute(QUERIES["forget_worker"], params)
        except psycopg.OperationalError as error:  # the row goes stale instead
            log.warning("forgetting worker failed: %s", error, extra={"action": "forget_failed"})

    async def _prune_on_schedule(self) -> None:
        interval = self._settings.prune_interval or 0.0
        older_than = timedelta(days=self._settings.prune_older_than_days)
        while True:
            await asyncio.sleep(interval)
            try:
                done = await prune(
                    self._url,
                    self._settings,
                    older_than,
                    delete_runs=self._settings.prune_delete_runs,
                )
            except psycopg.OperationalError as error:
                log.warning("prune failed: %s", error, extra={"action": "prune_failed"})
                continue
            if done is not None:
                log.info(
                    "pruned history of %d runs, deleted %d",
                    done.runs,
                    done.deleted,
                    extra={"action": "pruned", "runs": done.runs, "deleted": done.deleted},
                )

    async def _count_runs(self) -> None:
        """Keep the run-count gauges current even when no one scrapes /metrics (OTLP)."""
        while True:
            await self._telemetry.stats.refresh(self._pool)
            await asyncio.sleep(self._settings.metrics_interval)

    async def _watch_versions(self) -> None:
        """Say, now and then, which live runs this worker leaves to others, and why."""
        while True:
            try:
                async with self._pool.connection() as conn:
                    cursor = await conn.execute(QUERIES["foreign_versions"], self._versions)
                    rows = await cursor.fetchall()
            except psycopg.OperationalError:
                rows = []
            mine = dict(zip(self._versions["workflows"], self._versions["versions"], strict=True))
            for row in rows:
                workflow, version = row["workflow"], row["graph_version"]
                runs_here = (
                    f"runs {workflow!r} at {mine[workflow]!r}"
                    if workflow in mine
                    else f"has no workflow {workflow!r}"
                )
                log.warning(
                    "%d live runs of workflow %r need graph version %r; this worker %s "
                    "and leaves them to a worker that has it",
                    row["runs"],
                    workflow,
                    version,
                    runs_here,
                    extra={
                        "action": "foreign_versions",
                        "workflow": workflow,
                        "graph_version": version,
                        "runs": row["runs"],
                    },
                )
            await asyncio.sleep(VERSION_REPORT_INTERVAL)

    async def _listen(self) -> None:
        """Set the wake event on every NOTIFY; reconnect when the connection drops."""
        retry = RECONNECT_FIRST
        while True:
            try:
                url = listen_url(self._settings, self._url)
                async with await connect(url, self._settings) as conn:
                    for channel in CHANNELS:
                        await conn.execute(f"LISTEN {channel}")
                    retry = RECONNECT_FIRST
                    self.listening = True
                    # A NOTIFY may have been missed while disconnected.
                    self._schedules_due = 0.0
                    self._wake.set()
                    self._notifier.wake()
                    async for notify in conn.notifies():
                        if notify.channel == NOTIFICATIONS_CHANNEL:
                            self._notifier.wake()  # no run has work for it
                            continue
                        if notify.channel == SCHEDULES_CHANNEL:
                            self._schedules_due = 0.0
                        self._wake.set()
            except psycopg.OperationalError as error:
                self.listening = False
                log.warning(
                    "listener lost its connection: %s",
                    error,
                    extra={"action": "listener_reconnect", "retry_in": retry},
                )
                await asyncio.sleep(retry)
                retry = min(retry * 2, RECONNECT_MAX)


def workflow_versions(workflows: dict[str, Workflow]) -> dict[str, list[str]]:
    """The workflows a worker runs, each at its version, as the claim takes them."""
    return {
        "workflows": list(workflows),
        "versions": [workflow.version for workflow in workflows.values()],
    }
