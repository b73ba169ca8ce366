"""The agent's wheel, as ``pip install hatchway`` gets it: every module of every room and the
inspector's page inside, and no required dependency."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHIPPED_SUFFIXES = (".py", ".html", ".js", ".css")


def test_the_wheel_ships_the_whole_package_and_requires_nothing(tmp_path: Path) -> None:
    source = tmp_path / "agent"
    shutil.copytree(
        ROOT / "agent",
        source,
        ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"),
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-build-isolation",
            "--no-deps",
            "--disable-pip-version-check",
            str(source),
            "-w",
            str(tmp_path / "dist"),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp_path / "dist").glob("hatchway-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (metadata,) = (n for n in names if n.endswith(".dist-info/METADATA"))
        requires = [
            line
            for line in archive.read(metadata).decode().splitlines()
            if line.startswith("Requires-Dist:")
        ]
    expected = {
        str(path.relative_to(source))
        for path in (source / "hatchway").rglob("*")
        if path.suffix in SHIPPED_SUFFIXES
    }
    assert {n for n in names if not n.startswith("hatchway-")} == expected
    assert {"hatchway/protocol/codec.py", "hatchway/ui/inspector/static/index.html"} <= expected
    # Only the optional speed-ups, each behind the ``fast`` extra.
    assert requires and all('extra == "fast"' in line for line in requires), requires
