"""docs/workflows.md, run as written: its file, its commands, its SQL, its result."""

import json
import re
import subprocess
import sys
from pathlib import Path
from subprocess import Popen
from typing import IO, Any

from psycopg import AsyncConnection
from psycopg.rows import DictRow

from tests.conftest import ROOT, orchestrator_env
from tests.helpers import wait_for

Conn = AsyncConnection[DictRow]
DOC = ROOT / "docs" / "workflows.md"
PLACEHOLDER = "run_xxxxxxxxxxxx"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), re.S)


def commands() -> list[list[str]]:
    """The doc's `orchestrator ...` lines, in order, as argument lists."""
    lines = [line.strip() for block in blocks("bash") for line in block.splitlines()]
    found = []
    for line in lines:
        if line.startswith("orchestrator "):
            found.append(re.findall(r"'[^']*'|\S+", line.removesuffix("&").strip())[1:])
    return [[part.strip("'") for part in command] for command in found]


def started(args: list[str], env: dict[str, str], cwd: Path, log: IO[str]) -> Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "engine", *args], env=env, cwd=cwd, stdout=log, stderr=log
    )


async def test_the_guide_runs_as_written(db_url: str, conn: Conn, tmp_path: Path) -> None:
    [source] = [block for block in blocks("python") if block.startswith("# greeting.py")]
    (tmp_path / "greeting.py").write_text(source)
    [exported] = re.findall(r"export ORCHESTRATOR_APP=(\S+)", DOC.read_text())
    env = orchestrator_env(db_url, app=exported)
    env["PYTHONPATH"] = f"{tmp_path}:{ROOT}"

    def run(args: list[str]) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "engine", *args],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, (args, done.stderr)
        return done.stdout

    migrate, daemon, create, listed = commands()[:4]
    assert (migrate, daemon) == (["migrate"], ["daemon"])
    run(migrate)
    with (tmp_path / "daemon.log").open("w") as log:
        worker = started(daemon, env, tmp_path, log)
        try:
            run_id = run(create).split()[-1]
            await wait_for(
                conn,
                "SELECT status FROM runs WHERE run_id = %s",
                (run_id,),
                until=lambda rows: rows[0]["status"] == "pending_review",
            )
            assert run_id in run(listed)
            [insert] = blocks("sql")
            await conn.execute(insert.replace(PLACEHOLDER, run_id))
            rows: Any = await wait_for(
                conn,
                "SELECT status, result FROM runs WHERE run_id = %s",
                (run_id,),
                until=lambda rows: rows[0]["status"] == "published",
            )
        finally:
            worker.terminate()
            worker.wait(timeout=30)
    [shown] = re.findall(r"the result\n`(\{.*?\})`", DOC.read_text(), re.S)
    assert rows[0]["result"] == json.loads(shown)
    assert "published" in run(["runs", "show", run_id])
