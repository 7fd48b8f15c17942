"""A stranger's 1 MiB webhook stored for a run: the API's peak memory and the pages' sizes.

`orchestrator api` runs as its own process; a delivery of about 1 MiB (nested
900 deep, then half a million numbers) is written into `webhook_events` for a
run, as an ingress older than its size limit would have stored it, and the
run's console page, its live part, `GET /runs/{id}` and the raw bytes are
fetched. Prints each size and time and the API's peak RSS (VmHWM).

    python -m bench.bounded_pages
"""

import argparse
import json
import time
from pathlib import Path
from typing import Any

import httpx

from bench.harness import connect, scratch_database, service, until_up
from tests.stack import free_port

TOKEN = "bench-bounded-pages-token-0123456789abcdef"
DEPTH = 900
SIZE = 1 << 20


def delivery() -> str:
    """About SIZE bytes of JSON: deep first, then wide, the worst shape to pretty-print."""
    leaves = ",".join(["1"] * ((SIZE - 2 * DEPTH - 40) // 2))
    return '{"data": {"taskId": "task-1", "x": ' + "[" * DEPTH + leaves + "]" * DEPTH + "}}"


def _memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of `pid`, in MB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmHWM", "VmRSS")):
            key, value = line.split(":")
            values[key] = int(value.split()[0]) // 1024
    return values


def run(admin_url: str | None = None) -> dict[str, Any]:
    with scratch_database(admin_url) as url:
        with connect(url) as conn:
            conn.execute(
                "INSERT INTO runs (run_id, project, status, payload) "
                "VALUES ('run_bounded', 'p', 'waiting_provider', '{}')"
            )
            conn.execute(
                "INSERT INTO artifacts (run_id, type, provider, provider_job_id) "
                "VALUES ('run_bounded', 'image', 'kie', 'task-1')"
            )
            event = conn.execute(
                "INSERT INTO webhook_events (provider, signature_status, payload, job_id, run_id)"
                " VALUES ('kie', 'valid', %s::jsonb, 'task-1', 'run_bounded') RETURNING id",
                (delivery(),),
            ).fetchone()
        assert event is not None
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {TOKEN}"}
        results: dict[str, Any] = {}
        with service(url, "api", api_port=port, api_token=TOKEN) as api:
            until_up(f"{base}/readyz")
            results["idle_rss_mb"] = _memory(api.pid)["VmRSS"]
            with httpx.Client(base_url=base, headers=headers, timeout=300) as http:
                for name, path in (
                    ("run_page", "/console/runs/run_bounded"),
                    ("run_page_live", "/console/runs/run_bounded/live"),
                    ("api_run", "/runs/run_bounded"),
                    ("raw", f"/runs/run_bounded/webhook-events/{event['id']}/raw"),
                ):
                    started = time.monotonic()
                    response = http.get(path)
                    assert response.status_code == 200, (path, response.status_code)
                    results[f"{name}_bytes"] = len(response.content)
                    results[f"{name}_s"] = round(time.monotonic() - started, 2)
            results["peak_rss_mb"] = _memory(api.pid)["VmHWM"]
        return results


def main() -> None:
    argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0]).parse_args()
    print(json.dumps(run(), indent=2))


if __name__ == "__main__":
    main()
