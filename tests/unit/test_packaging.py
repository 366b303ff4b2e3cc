"""The wheel ships the Alembic migrations, and an installed copy can migrate (STYLE.md G11).

setup.cfg maps the top-level ``migrations/`` directory to the package
``gateway.migrations``; if that mapping or its package data broke, an installed
gateway could not upgrade its database. The wheel is built from a copy of the
source tree so that no ``build/`` directory is left in the working tree.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MIGRATION_FILES = (
    "gateway/migrations/env.py",
    "gateway/migrations/script.py.mako",
    "gateway/migrations/versions/0001_initial.py",
    "gateway/migrations/versions/0002_service_registrations.py",
)

#: Run in a child interpreter, with the unpacked wheel first on sys.path.
UPGRADE_SCRIPT = """
import sys
sys.path.insert(0, sys.argv[1])
import gateway
from gateway.cli import main
assert gateway.__file__.startswith(sys.argv[1]), gateway.__file__
sys.exit(main(["db", "upgrade", "--url", sys.argv[2]]))
"""


def _build_wheel(tmp_path: Path) -> Path:
    source = tmp_path / "src"
    shutil.copytree(
        REPO,
        source,
        ignore=shutil.ignore_patterns(
            ".git",
            ".venv",
            "build",
            "dist",
            "*.egg-info",
            "__pycache__",
            ".hypothesis",
            "test-logs",
            "*.sqlite3*",
        ),
    )
    out = tmp_path / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            ".",
        ],
        cwd=source,
        check=True,
        timeout=120,
    )
    (wheel,) = out.glob("xmpp_gateway-*.whl")
    return wheel


def test_wheel_ships_migrations_and_can_upgrade(tmp_path: Path) -> None:
    """The built wheel contains the migrations, and `xmpp-gateway db upgrade` from its
    unpacked copy migrates a new database (STYLE.md G11)."""
    wheel = _build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        assert set(MIGRATION_FILES) <= names
        installed = tmp_path / "installed"
        archive.extractall(installed)
    database = tmp_path / "db" / "gateway.sqlite3"
    result = subprocess.run(
        [
            sys.executable,
            "-W",
            "error::DeprecationWarning",
            "-c",
            UPGRADE_SCRIPT,
            str(installed),
            f"sqlite:///{database}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "database at revision 0002"
