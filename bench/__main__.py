"""`make bench`: every measurement on one PostgreSQL, then RESULTS.md and results.json.

The server is `DATABASE_URL`'s when set, else an embedded one started for the
run; each part works in its own scratch database on it.

    python -m bench [--quick]
"""

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime
from typing import Any

from bench import (
    approval_latency,
    console,
    overhead,
    recovery,
    report,
    scale,
    throughput,
    timers,
)
from bench.harness import ROOT, server_url

PARTS = (overhead, approval_latency, throughput, recovery, scale, timers, console)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples: under 2 minutes")
    args = parser.parse_args()
    started = time.monotonic()
    results: dict[str, Any] = {
        "quick": args.quick,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": {},
    }
    with server_url() as admin_url:
        results["machine"] = report.machine(admin_url)
        for part in PARTS:
            name = part.__name__.removeprefix("bench.")
            print(f"bench: {name} ...", file=sys.stderr, flush=True)
            part_started = time.monotonic()
            results.update(part.run(admin_url, quick=args.quick))
            results["seconds"][name] = round(time.monotonic() - part_started, 1)
    results["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    results["targets"] = report.targets(results)
    command = "make bench" + (" QUICK=1" if args.quick else "")
    (ROOT / "bench" / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (ROOT / "bench" / "RESULTS.md").write_text(report.render(results, command))
    for target in results["targets"]:
        mark = "met   " if target["met"] else "MISSED"
        print(f"{mark} {target['target']}: {target['measured']}", file=sys.stderr)


if __name__ == "__main__":
    main()
