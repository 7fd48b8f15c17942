"""Notification channels from the settings: checked at start, named without secrets,
their failures told without them."""

import base64
import json
from datetime import UTC, datetime

import pytest

from engine.runtime.channels import Notice, Redactor, channels_from
from engine.settings import Settings

SECRET = "whsec_" + base64.b64encode(bytes(32)).decode()
SLACK = "slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ"


def _channels(**settings: str) -> list[str]:
    return [channel.name for channel in channels_from(Settings.model_validate(settings))]


def test_every_apprise_url_and_the_webhook_is_a_channel_named_without_its_secrets() -> None:
    names = _channels(
        notify_urls=f"{SLACK}, json://ann:pw-123456@127.0.0.1:9/in mailto://u:p@example.com",
        notify_webhook_url="https://hooks.example/in?token=abcdef",
        notify_webhook_secret=SECRET,
    )
    assert [name.split(":")[0] for name in names] == ["slack", "json", "mailto", "webhook"]
    assert not any(word in " ".join(names) for word in ("TIiajk", "pw-123456", "abcdef"))
    # Stable: the next start names them alike (the outbox's rows say which channel).
    assert _channels(notify_urls=SLACK) == names[:1]
    assert _channels() == []
    assert _channels(notify_urls=" ", notify_webhook_url="", notify_webhook_secret="") == []


@pytest.mark.parametrize(
    ("settings", "error"),
    [
        (
            {"notify_urls": "nosuch://secret-token@x"},
            "ORCHESTRATOR_NOTIFY_URLS: a nosuch:// URL that Apprise cannot use",
        ),
        (
            {"notify_urls": "secret-token"},
            "ORCHESTRATOR_NOTIFY_URLS: an entry without a scheme:// that Apprise cannot use",
        ),
        (
            {"notify_urls": f"{SLACK} {SLACK}?footer=no"},
            "ORCHESTRATOR_NOTIFY_URLS: two URLs are the same Apprise service (slack:",
        ),
        (
            {"notify_webhook_url": "https://hooks.example/in"},
            "ORCHESTRATOR_NOTIFY_WEBHOOK_SECRET: the webhook needs both its URL and its secret",
        ),
        (
            {"notify_webhook_secret": SECRET},
            "ORCHESTRATOR_NOTIFY_WEBHOOK_URL: the webhook needs both its URL and its secret",
        ),
        (
            {"notify_webhook_url": "ftp://hooks.example/in", "notify_webhook_secret": SECRET},
            "ORCHESTRATOR_NOTIFY_WEBHOOK_URL: give an http:// or https:// URL",
        ),
        (
            {"notify_webhook_url": "https://h.example", "notify_webhook_secret": "secret-token"},
            "ORCHESTRATOR_NOTIFY_WEBHOOK_SECRET: give whsec_ and the base64 of 24 to 64",
        ),
        (
            {"notify_webhook_url": "https://h.example", "notify_webhook_secret": "whsec_c2hvcnQ="},
            "ORCHESTRATOR_NOTIFY_WEBHOOK_SECRET: give whsec_ and the base64 of 24 to 64",
        ),
    ],
)
def test_a_bad_channel_setting_is_refused_naming_it_and_not_showing_it(
    settings: dict[str, str], error: str
) -> None:
    with pytest.raises(ValueError) as refused:
        _channels(**settings)
    assert str(refused.value).startswith(error)
    assert "secret-token" not in str(refused.value)


def test_a_failure_s_description_has_the_url_s_secrets_cut_out() -> None:
    redact = Redactor("telegram://123456:AAF-bot-TOKEN@chat-77/?to=%40owner&key=k3y-v4lue")
    said = redact(
        "HTTPSConnectionPool: /bot123456:AAF-bot-TOKEN/sendMessage to @owner chat-77 k3y-v4lue"
    )
    assert said == "HTTPSConnectionPool: /bot****:****/sendMessage to **** **** ****"
    assert len(redact("x" * 2000)) == 500


def test_a_notice_as_the_webhook_posts_it() -> None:
    notice = Notice(
        id="run_a:notification:gate:3",
        event="gate",
        run_id="run_a",
        project="cats",
        gate="review",
        message="Run run_a (cats) waits for a decision at gate review.",
        link="https://o.example/console/runs/run_a",
        time=datetime(2026, 12, 3, 9, 0, tzinfo=UTC),
    )
    assert json.loads(notice.as_json()) == {
        "id": "run_a:notification:gate:3",
        "event": "gate",
        "run_id": "run_a",
        "project": "cats",
        "gate": "review",
        "link": "https://o.example/console/runs/run_a",
        "message": "Run run_a (cats) waits for a decision at gate review.",
        "time": "2026-12-03T09:00:00+00:00",
    }
    assert notice.title == "[cats] run_a waits for a decision"
    assert notice.text.splitlines() == [notice.message, notice.link]
