"""Webhook ingress under load: requests per second, and every accepted delivery stored.

`orchestrator api` runs as its own process; wrk (Debian's `wrk`) sends signed
upload-post deliveries, each with its own delivery id, pre-computed because
wrk's Lua has no HMAC. Afterwards the rows in `webhook_events` must equal the
202 answers: nothing accepted is lost, nothing stored twice.

    python -m bench.webhook_ingress [--seconds 10] [--connections 32]
"""

import argparse
import hashlib
import hmac
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bench.harness import connect, scratch_database, service, until_up
from tests.stack import free_port

SECRET = "bench-upload-post-secret"
LUA = """
local deliveries = {}
local counter = 1
local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  local n = 0
  for line in io.lines(args[1]) do
    if n % tonumber(args[2]) == id then
      local field = "([^\\t]*)\\t"
      local d, s, g, b = line:match(field .. field .. field .. "(.*)")
      table.insert(deliveries, {d, s, g, b})
    end
    n = n + 1
  end
  accepted = 0
  other = 0
end

function request()
  local d = deliveries[counter]
  counter = counter + 1
  if counter > #deliveries then counter = 1 end
  return wrk.format("POST", "/webhooks/upload-post", {
    ["Content-Type"] = "application/json",
    ["X-Upload-Post-Delivery"] = d[1],
    ["X-Upload-Post-Timestamp"] = d[2],
    ["X-Upload-Post-Signature"] = "sha256=" .. d[3],
  }, d[4])
end

function response(status, headers, body)
  if status == 202 then accepted = accepted + 1 else other = other + 1 end
end

function done(summary, latency, requests)
  local a, o = 0, 0
  for _, t in ipairs(threads) do
    a = a + t:get("accepted")
    o = o + t:get("other")
  end
  io.write(string.format("ACCEPTED %d OTHER %d\\n", a, o))
end
"""


def deliveries(path: Path, count: int) -> None:
    stamp = str(int(time.time()))
    with path.open("w") as out:
        for i in range(count):
            body = json.dumps(
                {
                    "event": "upload_completed",
                    "job_id": f"bench-{i}",
                    "platform": "tiktok",
                    "result": {"success": True, "url": f"https://tiktok.example/{i}"},
                }
            )
            signature = hmac.new(
                SECRET.encode(), f"{stamp}.{body}".encode(), hashlib.sha256
            ).hexdigest()
            out.write(f"{uuid.uuid4()}\t{stamp}\t{signature}\t{body}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--deliveries", type=int, default=100_000)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")
    port = free_port()
    with scratch_database() as url, tempfile.TemporaryDirectory() as tmp:
        data, script = Path(tmp) / "deliveries.tsv", Path(tmp) / "ingress.lua"
        deliveries(data, args.deliveries)
        script.write_text(LUA)
        settings = {"api_port": port, "upload_post_webhook_secret": SECRET, "pool_size": 16}
        with service(url, "api", **settings):
            until_up(f"http://127.0.0.1:{port}/readyz")
            threads = 2
            output = subprocess.run(
                [
                    "wrk",
                    f"-t{threads}",
                    f"-c{args.connections}",
                    f"-d{args.seconds}s",
                    "--latency",
                    "-s",
                    str(script),
                    f"http://127.0.0.1:{port}",
                    "--",
                    str(data),
                    str(threads),
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        with connect(url) as conn:
            stored = conn.execute("SELECT count(*) AS n FROM webhook_events").fetchone()
    accepted, other = map(int, re.search(r"ACCEPTED (\d+) OTHER (\d+)", output).groups())  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+(\S+)", output)
    print(
        json.dumps(
            {
                "webhook_requests_per_s": rps,
                "accepted_202": accepted,
                "other_answers": other,
                "rows_stored": stored["n"] if stored else 0,
                # wrk stops with requests in flight: stored, but their 202 never counted.
                "lost": max(0, accepted - (stored["n"] if stored else 0)),
                "latency_p99": p99.group(1) if p99 else None,
                "connections": args.connections,
                "seconds": args.seconds,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
