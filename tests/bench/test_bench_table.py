"""``make bench``'s table: each column's ratio to direct against its goal, and, for each peer
measured in the same run, whether the tunnel is ahead of it (lower latency, higher rates)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import run


def samples(**figures: float) -> run.Samples:
    measured = run.Samples()
    for key, value in figures.items():
        measured.add(key, value)
    return measured


DIRECT = samples(p50=100, p99=200, rps=10_000, mib=1_000, echo=1_000)
TUNNEL = samples(p50=1_000, p99=2_000, rps=500, mib=200, echo=50)
PEER = samples(p50=300, p99=40_000, rps=1_000, mib=40, echo=100)
SECOND_PEER = samples(p50=600, p99=1_000, rps=400, mib=250, echo=30)


def row(lines: list[str], label: str) -> list[str]:
    (line,) = [line for line in lines if line.startswith(f"| {label}")]
    return [cell.strip() for cell in line.strip("|").split("|")]


@pytest.mark.parametrize(
    ("label", "tunnel_ratio", "met", "peer_ratio", "ahead"),
    [
        ("p50 latency", "10.0x", "no", "3.0x", "no"),
        ("req/s c=32", "0.050", "no", "0.100", "no"),
        ("1 MB GET", "0.200", "yes", "0.040", "yes"),
        ("100 KB POST", "0.050", "no", "0.100", "no"),
    ],
)
def test_each_column_is_read_against_its_goal_and_against_ssh_r(
    label: str, tunnel_ratio: str, met: str, peer_ratio: str, ahead: str
) -> None:
    cells = row(run.render(DIRECT, TUNNEL, {}, 1, 1.0, {"ssh -R": PEER}), label)
    assert (cells[3], cells[5], cells[7], cells[8]) == (tunnel_ratio, met, peer_ratio, ahead)


def test_a_tunnel_with_less_latency_than_ssh_r_is_ahead_of_it() -> None:
    faster = samples(p50=250, p99=500, rps=500, mib=200, echo=50)
    assert row(run.render(DIRECT, faster, {}, 1, 1.0, {"ssh -R": PEER}), "p50 latency")[-1] == "yes"


@pytest.mark.parametrize(
    ("label", "ahead_of_ssh", "ahead_of_localtunnel"),
    [
        ("p50 latency", "no", "no"),
        ("req/s c=32", "no", "yes"),
        ("1 MB GET", "yes", "no"),
        ("100 KB POST", "no", "yes"),
    ],
)
def test_each_peer_has_its_own_columns_and_verdicts(
    label: str, ahead_of_ssh: str, ahead_of_localtunnel: str
) -> None:
    peers = {"ssh -R": PEER, "localtunnel": SECOND_PEER}
    lines = run.render(DIRECT, TUNNEL, {}, 1, 1.0, peers)
    head = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert head[6:] == [
        "ssh -R",
        "ssh -R/direct",
        "ahead of ssh -R",
        "localtunnel",
        "localtunnel/direct",
        "ahead of localtunnel",
    ]
    cells = row(lines, label)
    assert (cells[8], cells[11]) == (ahead_of_ssh, ahead_of_localtunnel)


def test_a_peers_p99_stands_under_its_own_column() -> None:
    lines = run.render(DIRECT, TUNNEL, {}, 1, 1.0, {"ssh -R": PEER, "localtunnel": SECOND_PEER})
    cells = row(lines, "p99 latency")
    assert (cells[6], cells[7], cells[9], cells[10]) == ("40,000", "200.0x", "1,000", "5.0x")


@pytest.mark.parametrize("peers", [None, {}, {"ssh -R": run.Samples()}])
def test_without_a_measured_peer_the_table_has_no_peer_columns(
    peers: dict[str, run.Samples] | None,
) -> None:
    lines = run.render(DIRECT, TUNNEL, {}, 1, 1.0, peers)
    assert "ssh -R" not in lines[0]
    assert len(row(lines, "req/s c=32")) == 6
