"""Schema and packaging: migrations/schema.sql is what migrating an empty database yields,
and the wheel carries the migrations, so `orchestrator migrate` works from an install."""

import difflib
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from tests.conftest import ROOT
from tools.schema import SCHEMA_FILE, migrated_schema

MIGRATIONS = ROOT / "migrations"
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SETUPTOOLS = PROJECT["tool"]["setuptools"]
PACKAGES = [pattern.rstrip("*") for pattern in SETUPTOOLS["packages"]["find"]["include"]]


def _sql_migrations() -> list[Path]:
    return sorted([*MIGRATIONS.glob("*.up.sql"), *MIGRATIONS.glob("*.down.sql")])


def test_schema_sql_is_what_migrating_an_empty_database_yields(admin_url: str) -> None:
    actual = migrated_schema(admin_url)
    expected = SCHEMA_FILE.read_text()
    if actual != expected:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(keepends=True),
                actual.splitlines(keepends=True),
                fromfile="migrations/schema.sql",
                tofile="migrated empty database",
            )
        )
        pytest.fail(f"migrations/schema.sql is out of date: run make schema\n{diff}", pytrace=False)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built from a copy of the tree (a build leaves build/ behind).

    With build isolation, as `pip install .` does it: the project asks for
    setuptools>=68, newer than the dev venv's, which has no `wheel` for it either.
    """
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    source.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.py[co]")
    for name in [*PACKAGES, MIGRATIONS.name]:
        # symlinks=True: engine/db/_migrations stays the relative link it is in git.
        shutil.copytree(ROOT / name, source / name, symlinks=True, ignore=ignore)
    for name in ("pyproject.toml", PROJECT["project"]["readme"]):
        shutil.copy2(ROOT / name, source / name)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", tmp / "dist", source],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (found,) = (tmp / "dist").glob("orchestrator-*.whl")
    return found


def test_the_wheel_holds_the_migrations_and_the_package_data(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        migrations = _sql_migrations()
        assert migrations
        for migration in migrations:
            shipped = f"engine/db/_migrations/{migration.name}"
            assert shipped in names, f"{shipped} is not in the wheel"
            assert archive.read(shipped) == migration.read_bytes(), shipped
    for package, patterns in SETUPTOOLS["package-data"].items():
        directory = ROOT / package.replace(".", "/")
        for pattern in patterns:
            files = [path for path in directory.glob(pattern) if path.is_file()]
            assert files, f"package-data {package}: {pattern!r} matches nothing"
            for path in files:
                shipped = (Path(*package.split(".")) / path.relative_to(directory)).as_posix()
                assert shipped in names, f"{shipped} is not in the wheel"
    top = {name.split("/")[0] for name in names}
    assert {name for name in top if not name.endswith(".dist-info")} == set(PACKAGES), (
        "the wheel installs only the project's packages (no top-level migrations/)"
    )


@pytest.fixture
def empty_database(admin_url: str) -> Iterator[str]:
    name = f"orch_pkg_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield make_conninfo(admin_url, dbname=name)
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def test_orchestrator_migrate_runs_from_the_installed_wheel_in_another_folder(
    wheel: Path, empty_database: str, tmp_path: Path
) -> None:
    """A fresh venv gets the wheel; the dev venv lends only the dependencies.

    The dev venv's site-packages is added by a .pth line, so its own .pth files (the
    editable install's finder, which maps `engine` to this checkout) are never run.
    The command runs in an empty folder with no PYTHONPATH: nothing of the checkout
    is importable, and `engine` must be the installed one.
    """
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True, timeout=60)
    python = venv / "bin" / "python"
    install: list[str | Path] = ["install", "--no-deps", "--no-index", "--quiet", wheel]
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "--python", python, *install],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.strip()
    dev_paths = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))
    (Path(site) / "dev_dependencies.pth").write_text("".join(f"{p}\n" for p in dev_paths))

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("ORCHESTRATOR_", "PYTHON")) and key != "DATABASE_URL"
    }
    env.update(DATABASE_URL=empty_database, PYTHONNOUSERSITE="1", PYTHONSAFEPATH="1")

    def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            args, env=env, cwd=elsewhere, capture_output=True, text=True, timeout=90
        )

    where = run(
        python,
        "-c",
        "import engine, engine.db.migrations as m; print(engine.__file__); print(m.MIGRATIONS)",
    )
    assert where.returncode == 0, where.stderr
    for line in where.stdout.splitlines():
        assert Path(line).resolve().is_relative_to(venv.resolve()), where.stdout

    head = len(list(MIGRATIONS.glob("*.up.sql")))
    migrated = run(venv / "bin" / "orchestrator", "migrate")
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    assert f"schema at version {head} (was 0)" in migrated.stdout
    with psycopg.connect(empty_database) as conn:
        row = conn.execute("SELECT max(version), count(*) FROM orchestrator_migrations").fetchone()
    assert row == (head, head)
