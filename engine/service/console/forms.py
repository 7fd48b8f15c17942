"""The console's forms, checked before anything reaches the database: the approval
form, drawn from the gate's declared edits; the schedule and new-run forms, read into
the API's own bodies (engine/service/inputs.py) so that both refuse alike; the runs
ticked for a bulk action."""

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, cast

from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData

from engine.runtime.store import InvalidInput
from engine.runtime.workflow import Gate, checked_edit
from engine.service.inputs import BackfillRange, NewRun, NewSchedule
from engine.service.refusals import first_invalid

GATE = re.compile(r"^[a-z][a-z0-9_]{0,40}$")
MAX_COMMENT = 5_000
MAX_APPROVER = 200
MAX_FIELD = 20_000

SCHEDULE_FIELDS = ("cron", "timezone", "project", "brief", "workflow", "overlap", "catchup")
BACKFILL_FIELDS = ("from", "to")
# idempotency_key: not on the form; its confirmation sends one (console.actions.starting)
NEW_RUN_FIELDS = ("project", "workflow", "priority", "not_before", "brief", "idempotency_key")
INTEGER = re.compile(r"^[+-]?[0-9]{1,9}$")
# Runs ticked at once: at most a page of the runs list (views.MAX_PAGE_SIZE).
MAX_TICKED = 200
RUN_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
OPERATIONS = ("cancel", "retry")

Kind = Literal["ordered", "choice", "text", "time", "number", "flag", "json"]
Operation = Literal["cancel", "retry"]
Body = TypeVar("Body", bound=BaseModel)


@dataclass(frozen=True)
class EditField:
    """One field of a gate's `edits`, as the form shows it."""

    name: str
    title: str
    kind: Kind  # ordered: pick and order some of `options`
    value: Any  # what the form starts with: the request's value, else the default
    options: tuple[str, ...] = ()

    @property
    def offered(self) -> list[str]:
        """For `ordered`: the chosen options in their order, then the rest."""
        chosen = [item for item in self.value if item in self.options] if self.value else []
        return [*chosen, *(option for option in self.options if option not in chosen)]


def edit_fields(gate: Gate | None, waiting_for: Mapping[str, Any] | None) -> list[EditField]:
    """The form for what `gate` lets an approver change, filled from the request."""
    if gate is None or gate.edits is None:
        return []
    schema = gate.edits.model_json_schema()
    request = waiting_for or {}
    fields = []
    for name, declared in schema.get("properties", {}).items():
        prop = _resolved(declared, schema)
        prefill = prop.get("prefill")
        value = request.get(prefill) if isinstance(prefill, str) else prop.get("default")
        kind, options = _kind(prop, schema)
        if kind == "ordered" and not _strings(value):
            value = []
        fields.append(EditField(name, str(prop.get("title", name)), kind, value, options))
    return fields


def _kind(prop: Mapping[str, Any], schema: Mapping[str, Any]) -> tuple[Kind, tuple[str, ...]]:
    items = _resolved(prop.get("items", {}), schema)
    if prop.get("type") == "array" and _strings(items.get("enum")):
        return "ordered", tuple(items["enum"])
    if _strings(prop.get("enum")):
        return "choice", tuple(prop["enum"])
    if prop.get("type") == "string" and prop.get("format") == "date-time":
        return "time", ()
    kinds: dict[object, Kind] = {
        "string": "text",
        "integer": "number",
        "number": "number",
        "boolean": "flag",
    }
    return kinds.get(prop.get("type"), "json"), ()


def _resolved(prop: Mapping[str, Any], schema: Mapping[str, Any]) -> Mapping[str, Any]:
    """`prop` with a local `$ref` (pydantic's `$defs`) followed, keeping its own keys; an
    optional field (`X | None`: `anyOf` X and null) as X, which an empty box leaves unset."""
    options = prop.get("anyOf")
    if isinstance(options, list):
        given = [option for option in options if option != {"type": "null"}]
        if len(given) == 1 and len(options) == 2 and isinstance(given[0], Mapping):
            rest = {key: value for key, value in prop.items() if key != "anyOf"}
            return {**_resolved(given[0], schema), **rest}
    ref = prop.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        return {**schema.get("$defs", {}).get(ref.removeprefix("#/$defs/"), {}), **prop}
    return prop


def _strings(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


@dataclass(frozen=True)
class ApprovalForm:
    gate: str
    rejected: bool
    approver: str
    comment: str | None
    payload: dict[str, Any] | None  # the fields the approver changed, checked by the gate
    pause_id: int | None  # the pause the form was shown for: refused if the run moved on


def parse_approval(
    form: FormData,
    waiting_for: Mapping[str, Any] | None,
    spec_of: Callable[[str], Gate | None],
    identity: str | None = None,
) -> ApprovalForm:
    """What the form asks; signed in, the approver is `identity`, whatever the form says."""
    gate = _text(form, "gate")
    if not GATE.match(gate):
        raise InvalidInput(f"gate: {gate!r} is not a gate name")
    decision = _text(form, "decision")
    if decision not in ("approved", "rejected"):
        raise InvalidInput(f"decision: must be 'approved' or 'rejected', not {decision!r}")
    approver = identity or _text(form, "approver").strip()
    if not approver:
        raise InvalidInput("approver: enter your name, so the approval says who gave it")
    if len(approver) > MAX_APPROVER:
        raise InvalidInput(f"approver: at most {MAX_APPROVER} characters")
    comment = _text(form, "comment").strip()
    if len(comment) > MAX_COMMENT:
        raise InvalidInput(f"comment: at most {MAX_COMMENT} characters")
    payload = None
    if decision == "approved" and _text(form, "edit"):
        spec = spec_of(gate)
        payload = _edited(form, edit_fields(spec, waiting_for))
        checked_edit(spec, payload)
    pause = _text(form, "pause_id").strip()
    if pause and not (pause.isascii() and pause.isdigit() and len(pause) <= 18):
        raise InvalidInput(f"pause_id: {pause[:40]!r} is not a pause number")
    return ApprovalForm(
        gate,
        decision == "rejected",
        approver,
        comment or None,
        payload,
        int(pause) if pause else None,
    )


def _edited(form: FormData, fields: list[EditField]) -> dict[str, Any] | None:
    """The fields whose value the approver changed (None: approved as asked)."""
    changed = {}
    for field in fields:
        value = _value(form, field)
        if value != field.value:
            changed[field.name] = value
    return changed or None


def _value(form: FormData, field: EditField) -> Any:
    key = f"edit.{field.name}"
    if field.kind == "ordered":
        return _ordered(form, field)
    if field.kind == "flag":  # a browser sends no unticked box
        return bool(_text(form, key))
    if key not in form:  # not on the form that was sent: unchanged
        return field.value
    text = _text(form, key).strip()
    if len(text) > MAX_FIELD:
        raise InvalidInput(f"payload.{field.name}: at most {MAX_FIELD} characters")
    if not text and field.value is None:  # an empty box for a field without a value
        return None
    if field.kind == "number":
        try:
            return json.loads(text) if text else None
        except json.JSONDecodeError:
            raise InvalidInput(f"payload.{field.name}: {text[:40]!r} is not a number") from None
    if field.kind == "json":
        try:
            return json.loads(text) if text else None
        except json.JSONDecodeError as error:
            raise InvalidInput(f"payload.{field.name}: not valid JSON ({error.msg})") from None
    return text


def _ordered(form: FormData, field: EditField) -> list[str]:
    offered = field.offered
    chosen = [_string(value, field.name) for value in form.getlist(f"edit.{field.name}")]
    if unknown := [name for name in chosen if name not in offered]:
        choices = ", ".join(offered)
        raise InvalidInput(
            f"payload.{field.name}: unknown choice {unknown[0]!r} (choose from {choices})"
        )

    def position(name: str) -> tuple[int, int]:
        given = _text(form, f"order.{field.name}.{name}").strip()
        if not given:
            return (offered.index(name) + 1, offered.index(name))
        if not given.isdigit() or not 1 <= int(given) <= 99:
            raise InvalidInput(
                f"payload.{field.name}: the position of {name} must be 1 to 99, not {given!r}"
            )
        return (int(given), offered.index(name))

    return sorted(dict.fromkeys(chosen), key=position)


def typed(form: FormData, fields: tuple[str, ...]) -> dict[str, str]:
    """What the form sent for `fields`, as typed: a refused form is shown again with it."""
    return {name: _text(form, name) for name in fields}


def parse_schedule(fields: Mapping[str, str]) -> NewSchedule:
    """The new-schedule form as `POST /schedules` takes it; a blank field is left out."""
    return _body(NewSchedule, fields)


def parse_backfill(fields: Mapping[str, str]) -> BackfillRange:
    """The backfill form as `POST /schedules/{id}/backfill` takes it."""
    return _body(BackfillRange, fields)


def parse_new_run(fields: Mapping[str, str]) -> NewRun:
    """The new-run form as `POST /runs` takes it: a blank field left out, the priority's
    digits as the number JSON would carry (anything else is refused as JSON's would be)."""
    priority = fields.get("priority", "").strip()
    return _body(NewRun, fields, priority=int(priority) if INTEGER.match(priority) else priority)


@dataclass(frozen=True)
class BulkForm:
    """The runs ticked on the runs page, and what to do with them."""

    operation: Operation
    run_ids: list[str]


def parse_bulk(form: FormData) -> BulkForm:
    operation = _text(form, "operation")
    if operation not in OPERATIONS:
        raise InvalidInput(f"operation: 'cancel' or 'retry', not {operation[:20]!r}")
    run_ids = list(dict.fromkeys(_string(value, "run_id") for value in form.getlist("run_id")))
    if not run_ids:
        raise InvalidInput(f"run_id: tick the runs to {operation} first")
    if len(run_ids) > MAX_TICKED:
        raise InvalidInput(f"run_id: at most {MAX_TICKED} runs at once, not {len(run_ids)}")
    if bad := next((run_id for run_id in run_ids if not RUN_ID.match(run_id)), None):
        raise InvalidInput(f"run_id: {bad[:70]!r} is not a run id")
    return BulkForm(cast(Operation, operation), run_ids)


def _body(model: type[Body], fields: Mapping[str, str], **values: object) -> Body:
    given: dict[str, object] = {
        name: value.strip() for name, value in fields.items() if value.strip()
    }
    given.update((name, value) for name, value in values.items() if value != "")
    try:
        return model.model_validate(given)
    except ValidationError as error:
        raise InvalidInput(first_invalid(error.errors())[1]) from None


def shown(gate: Gate | None, waiting_for: Mapping[str, Any] | None) -> list[tuple[str, Any]]:
    """(label, value) of what the gate's request shows approvers, in the declared order."""
    request = waiting_for or {}
    labels = gate.shows if gate is not None else {}
    return [(label, request[key]) for key, label in labels.items() if key in request]


def _text(form: FormData, field: str) -> str:
    return _string(form.get(field, ""), field)


def _string(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"{field}: expected text, not a file")
    return value
