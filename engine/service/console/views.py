"""What the pages show, shaped from rows and query strings: the runs filter, a run's
timeline, media previews, what a schedule action did and a form's refusal."""

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

from engine.db.status import STATUS_PARAMS, Status
from engine.runtime import history
from engine.runtime.store import PROJECT_SLUG, InvalidInput, known_status, parse_duration

PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
MAX_BRIEF_SEARCH = 200
STUCK_AFTER = "30m"  # a live run older than this is stuck, unless the filter says how old
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".avif")
VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".m4v", ".ogv")
SCHEDULE_ACTIONS = ("created", "paused", "resumed", "deleted", "backfilled")
SCHEDULE_ID = re.compile(r"^sch_[a-z0-9]{1,40}$")


@dataclass(frozen=True)
class RunFilter:
    """The runs page's query string: filters, and a cursor (the last row of the page before)."""

    status: str | None = None
    project: str | None = None
    workflow: str | None = None
    brief: str | None = None  # text the brief contains, in any case
    older_than: str | None = None  # created longer ago than this (45s, 30m, 2h, 7d)
    stuck: bool = False  # only live runs, older than `older_than` (or STUCK_AFTER)
    before: tuple[datetime, str] | None = None
    limit: int = PAGE_SIZE

    @classmethod
    def parse(
        cls, params: Mapping[str, str], gates: Iterable[str], workflows: Iterable[str]
    ) -> "RunFilter":
        """The filter in `params`, each value checked (InvalidInput naming it); a status
        must be one a run of an App with `gates` can have, a workflow one of `workflows`."""
        status = params.get("status", "").strip() or None
        if status is not None:
            known_status(status, gates)
        project = params.get("project", "").strip() or None
        if project is not None and not PROJECT_SLUG.match(project):
            raise InvalidInput(f"project: {project[:64]!r} is not a project slug")
        workflow = params.get("workflow", "").strip() or None
        if workflow is not None and workflow not in (known := list(workflows)):
            raise InvalidInput(
                f"workflow: no workflow named {workflow[:100]!r}; one of {', '.join(known)}"
            )
        brief = params.get("brief", "").strip() or None
        if brief is not None and len(brief) > MAX_BRIEF_SEARCH:
            raise InvalidInput(f"brief: search for at most {MAX_BRIEF_SEARCH} characters")
        older_than = params.get("older_than", "").strip() or None
        if older_than is not None:
            parse_duration(older_than, "older_than")
        limit = params.get("limit", str(PAGE_SIZE))
        if not limit.isdigit() or not 1 <= int(limit) <= MAX_PAGE_SIZE:
            raise InvalidInput(f"limit: a number from 1 to {MAX_PAGE_SIZE}, not {limit!r}")
        return cls(
            status,
            project,
            workflow,
            brief,
            older_than,
            params.get("stuck", "") not in ("", "0"),
            _cursor(params.get("before", "")),
            int(limit),
        )

    def sql_params(self) -> dict[str, Any]:
        """For `console_runs` and `console_status_counts` (which leaves out the status
        and the cursor)."""
        older_than = self.older_than or (STUCK_AFTER if self.stuck else None)
        return {
            "status": self.status,
            "project": self.project,
            "workflow": self.workflow,
            "brief": f"%{_escaped(self.brief)}%" if self.brief else None,
            "stuck": self.stuck,
            "older_than": parse_duration(older_than, "older_than") if older_than else None,
            **STATUS_PARAMS,
            "before_at": self.before[0] if self.before else None,
            "before_id": self.before[1] if self.before else None,
            "limit": self.limit + 1,  # one more tells whether a next page exists
        }

    def query(self, **change: Any) -> str:
        """This filter's query string, with `change` applied (e.g. `before=row`)."""
        changed = replace(self, **change)
        params = {
            "status": changed.status,
            "project": changed.project,
            "workflow": changed.workflow,
            "brief": changed.brief,
            "older_than": changed.older_than,
            "stuck": "1" if changed.stuck else None,
            "before": f"{changed.before[0].isoformat()} {changed.before[1]}"
            if changed.before
            else None,
            "limit": changed.limit if changed.limit != PAGE_SIZE else None,
        }
        return urlencode({key: value for key, value in params.items() if value is not None})


def _escaped(text: str) -> str:
    """`text` matched as itself by LIKE: its wildcards and the escape taken literally."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _cursor(text: str) -> tuple[datetime, str] | None:
    if not text.strip():
        return None
    at, _, run_id = text.strip().rpartition(" ")
    try:
        return (datetime.fromisoformat(at), run_id)
    except ValueError:
        raise InvalidInput("before: not a page cursor (follow the 'Older' link)") from None


@dataclass(frozen=True)
class Done:
    """What a schedule action did, from the query string it sent the browser back with."""

    action: str  # one of SCHEDULE_ACTIONS
    schedule_id: str
    runs: int = 0  # backfilled: the runs it started, of `fire_times` in the range
    fire_times: int = 0

    @classmethod
    def parse(cls, params: Mapping[str, str]) -> "Done | None":
        action, schedule_id = params.get("done", ""), params.get("schedule", "")
        if action not in SCHEDULE_ACTIONS or not SCHEDULE_ID.match(schedule_id):
            return None
        counts = (params.get("runs", ""), params.get("fire_times", ""))
        runs, fire_times = (int(n) if n.isdigit() and len(n) <= 6 else 0 for n in counts)
        return cls(action, schedule_id, runs, fire_times)

    def path(self) -> str:
        counts = {"runs": self.runs, "fire_times": self.fire_times}
        return with_query(
            "/console/schedules",
            done=self.action,
            schedule=self.schedule_id,
            **(counts if self.action == "backfilled" else {}),
        )


@dataclass(frozen=True)
class Refusal:
    """A form refused, shown again on its page with what was typed and the field named."""

    message: str  # "cron: '61 * * * *' is not a cron expression (...)"
    typed: Mapping[str, str]
    schedule_id: str | None = None  # whose backfill form; None: the new schedule's

    @property
    def field(self) -> str:
        return self.message.split(":", 1)[0]


def limit_wait(run: Mapping[str, Any], limit: Mapping[str, Any] | None) -> str | None:
    """What a run parked at a limit waits for, in words ("a render slot (3 of 3 in
    flight, 2 runs waiting for one)", "room in project cats (2 of 2 running, ...)"),
    from its `waiting_for` and its limit's row (`console_limit`); None for any other run."""
    waiting = run.get("waiting_for") or {}
    name = waiting.get("limit")
    if run.get("status") != Status.WAITING_LIMIT or not isinstance(name, str):
        return None
    kind, _, what = name.partition(":")
    if kind == "project":
        wanted, unit, taken = f"room in project {what}", "room", "running"
    elif "key" in waiting:
        wanted, unit, taken = f"a {what} slot", "one", "in flight"
    else:
        return f"{what} to take requests again (paused after a 429, or its requests spent)"
    if run.get("wake_at") is not None:
        return f"{wanted}: handed it, the run goes on at the next claim"
    if limit is None or limit["concurrent"] is None:
        return wanted
    parked = limit["parked"]
    return (
        f"{wanted} ({limit['held']} of {limit['concurrent']} {taken}, "
        f"{parked} run{'' if parked == 1 else 's'} waiting for {unit})"
    )


@dataclass(frozen=True)
class Entry:
    """One line of a run's timeline."""

    at: datetime
    kind: str  # created | step | approval | event
    row: Any  # the run, a checkpoint (`history.Entry`), an approval or a webhook event


def timeline(
    run: Mapping[str, Any],
    checkpoints: Iterable[history.Entry],
    approvals: Iterable[Mapping[str, Any]],
    events: Iterable[Mapping[str, Any]],
) -> list[Entry]:
    """Checkpoints in their order, approvals and webhook events placed among them by time."""
    entries = [Entry(run["created_at"], "created", run)]
    last: datetime = run["created_at"]
    for checkpoint in checkpoints:
        last = checkpoint.at or last  # LangGraph writes `ts`; carry the previous time if not
        entries.append(Entry(last, "step", checkpoint))
    entries += [Entry(a["created_at"], "approval", a) for a in approvals]
    entries += [Entry(e["received_at"], "event", e) for e in events]
    return sorted(entries, key=lambda entry: entry.at)  # stable: ties keep the order above


def written(checkpoint: history.Entry) -> dict[str, Any]:
    """What a checkpoint's nodes wrote, by `node.channel`: the value, or its size when it
    is too large to show."""
    return {
        f"{w.node}.{w.channel}": w.value if w.shown else f"({w.size} bytes, not shown)"
        for w in checkpoint.writes
    }


def notifications(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The run's notifications, each with its deliveries (one per channel), from
    `console_notifications`' rows (one per delivery)."""
    found: dict[int, dict[str, Any]] = {}
    for row in rows:
        if row["id"] not in found:
            due = row["metadata"].get("due_at")
            found[row["id"]] = {
                **{key: row[key] for key in ("id", "status", "metadata")},
                "due_at": datetime.fromisoformat(due) if isinstance(due, str) else None,
                "deliveries": [],
            }
        notification = found[row["id"]]
        if row["channel"] is not None:
            notification["deliveries"].append(row)
    return list(found.values())


def media_kind(url: object) -> str | None:
    """'image' or 'video' when `url` is an http(s) link to one, by its file suffix."""
    if not is_link(url):
        return None
    assert isinstance(url, str)
    path = urlsplit(url).path.lower()
    if path.endswith(IMAGE_SUFFIXES):
        return "image"
    if path.endswith(VIDEO_SUFFIXES):
        return "video"
    return None


def is_link(value: object) -> bool:
    """Only http(s) URLs become links: never `javascript:` and the like."""
    return isinstance(value, str) and value.startswith(("http://", "https://"))


def local_path(target: str | None, default: str = "/") -> str:
    """A path on this site to go back to; anything else (another host) becomes `default`."""
    # Browsers drop tabs and newlines from URLs ("/\t/evil.example" is "//evil.example")
    # and read a backslash as a slash: only printable ASCII, one leading slash.
    if (
        not target
        or not target.startswith("/")
        or target.startswith("//")
        or "\\" in target
        or not all(" " < ch <= "~" for ch in target)
        or urlsplit(target).netloc
    ):
        return default
    return target


def with_query(path: str, **params: object) -> str:
    parts = urlsplit(path)
    query = "&".join(filter(None, [parts.query, urlencode(params)]))
    return f"{parts.path}?{query}" if query else parts.path
