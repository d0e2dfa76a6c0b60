"""``pip install .`` (a wheel, not an editable install) gives a working ``confman``."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert "deprecat" not in r.stderr.lower(), r.stderr
    (path,) = out.glob("confman-*.whl")
    return path


def test_the_wheel_carries_the_served_files_and_an_spdx_licence(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        meta = next(z.read(n).decode() for n in names if n.endswith(".dist-info/METADATA"))
    static = {p.name for p in (ROOT / "confman/api/static").iterdir() if p.is_file()}
    assert "confman/api/openapi.json" in names
    assert {f"confman/api/static/{n}" for n in static} <= names
    assert "License-Expression: Apache-2.0" in meta.splitlines()
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert any(n.endswith("entry_points.txt") for n in names)


def test_the_installed_package_runs_and_finds_its_assets(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    r = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
         str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "import confman, json;"
        "from confman.api.routes_health import asset;"
        "assert confman.__file__.startswith(sys.argv[1]), confman.__file__;"
        "assert json.loads(asset('openapi.json'))['openapi'];"
        "assert b'swagger' in asset('static/docs.html').lower();"
        "from confman.cli import main;"
        "main(['--version'])"
    )
    r = subprocess.run(
        [sys.executable, "-c", probe, str(target)],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert "confman, version" in r.stdout
