"""The code's shape, kept: no import cycles, no source module over 800 lines, and the relay
(``functions/``) takes nothing from the agent's distribution but ``hatchway.protocol``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_ROOTS = ("agent", "functions", "functions/domain", "infra")
PACKAGES = ("hatchway", "hatchway_relay", "hatchway_local", "hatchway_domain")
SOURCE_DIRS = ("agent", "functions", "infra", "scripts", "bench")

MAX_MODULE_LINES = 800
"""Past this a module is doing two jobs; split it where they part."""


def modules() -> dict[str, Path]:
    found = {}
    for base in PACKAGE_ROOTS:
        for path in (ROOT / base).rglob("*.py"):
            parts = path.relative_to(ROOT / base).with_suffix("").parts
            if parts[0] not in PACKAGES:
                continue
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The project's modules ``path`` imports (``from package import submodule`` included)."""
    deps = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                name = f"{node.module}.{alias.name}"
                deps.add(name if name in known else node.module)
        elif isinstance(node, ast.Import):
            deps.update(alias.name for alias in node.names)
    return {d for d in deps if d in known}


def test_no_module_imports_one_that_imports_it_back() -> None:
    known = modules()
    graph = {name: imports(path, known) - {name} for name, path in known.items()}
    cycles = []
    for start in graph:
        # Depth-first from each module: any path back to it is a cycle.
        stack, seen = [(start, (start,))], set()
        while stack:
            node, trail = stack.pop()
            for dep in graph[node]:
                if dep == start:
                    cycles.append(" -> ".join((*trail, start)))
                elif dep not in seen:
                    seen.add(dep)
                    stack.append((dep, (*trail, dep)))
    assert cycles == []


@pytest.mark.parametrize("directory", SOURCE_DIRS)
def test_no_source_module_is_over_800_lines(directory: str) -> None:
    long = {
        str(path.relative_to(ROOT)): lines
        for path in (ROOT / directory).rglob("*.py")
        if "egg-info" not in str(path)
        and (lines := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}


def test_the_relay_takes_only_the_protocol_from_the_agents_distribution() -> None:
    known = modules()
    taken = {
        dep
        for name, path in known.items()
        if name.split(".")[0] in ("hatchway_relay", "hatchway_domain")
        for dep in imports(path, known)
        if dep.split(".")[0] == "hatchway"
    }
    assert taken and all(dep.startswith("hatchway.protocol") for dep in taken), taken


AGENT_ROOMS = (
    ("hatchway.protocol",),
    ("hatchway.errors", "hatchway.version"),
    ("hatchway.transport",),
    ("hatchway.serving",),
    ("hatchway.ui",),
)
"""The agent's rooms, lowest first: a module may import its own room and the ones below it.
Whatever is in none of them (``cli``, ``api``, ``service``, ``config``...) is a front door,
above every room."""


def agent_room(module: str) -> int:
    for level, room in enumerate(AGENT_ROOMS):
        if any(module == prefix or module.startswith(prefix + ".") for prefix in room):
            return level
    return len(AGENT_ROOMS)


def test_each_agent_room_imports_only_the_rooms_below_it() -> None:
    known = modules()
    upward = sorted(
        f"{name} -> {dep}"
        for name, path in known.items()
        if name.split(".")[0] == "hatchway"
        for dep in imports(path, known)
        if dep.split(".")[0] == "hatchway" and agent_room(dep) > agent_room(name)
    )
    assert upward == []


def test_every_agent_module_has_a_room_or_is_a_front_door() -> None:
    front_doors = {
        name
        for name in modules()
        if name.split(".")[0] == "hatchway" and agent_room(name) == len(AGENT_ROOMS)
    }
    assert front_doors == {
        "hatchway",
        "hatchway.api",
        "hatchway.arenas",
        "hatchway.cli",
        "hatchway.config",
        "hatchway.service",
    }
