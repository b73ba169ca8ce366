"""The command line's own decisions, without a relay: which display it picks, how flags become
tunnel options, and usage errors that name the option (exit code 2, nothing started)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from hatchway import cli, protocol
from hatchway.config import (
    parse_inspect_memory,
    resolve_rotate_after,
    resolve_settings,
    resolve_stop_grace,
)
from hatchway.serving.session import MAX_STOP_GRACE_SECONDS, STOP_GRACE_SECONDS
from hatchway.serving.tunnels import TunnelOptions, tunnel_options
from hatchway.ui.display import JsonLog, LineLog, Screen, Status


class Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.mark.parametrize(
    ("log_format", "tty", "display"),
    [
        ("auto", True, Screen),
        ("auto", False, LineLog),
        ("screen", False, Screen),
        ("plain", True, LineLog),
        ("json", True, JsonLog),
        ("json", False, JsonLog),
    ],
)
def test_the_display_follows_the_terminal_unless_told(
    log_format: str, tty: bool, display: type
) -> None:
    status = Status("ws://r", [tunnel_options("3000")])
    chosen = cli.display_for(log_format, status, Stream(tty), io.StringIO())
    assert type(chosen) is display


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HATCHWAY_CONFIG", str(tmp_path / "config.toml"))
    for name in (
        "HATCHWAY_SERVER",
        "HATCHWAY_TOKEN",
        "HATCHWAY_WEBHOOK_SECRET",
        "HATCHWAY_ROTATE_SECONDS",
    ):
        monkeypatch.delenv(name, raising=False)


def options(*argv: str) -> TunnelOptions:
    return cli._tunnels(cli.build_parser().parse_args(["http", *argv]))[0]


def test_flags_become_the_tunnels_options(monkeypatch: pytest.MonkeyPatch) -> None:
    parsed = options(
        "localhost:8000",
        "--subdomain",
        "shop",
        "--host-header",
        "rewrite",
        "--request-header-add",
        "X-A: 1",
        "--request-header-add",
        "X-B: 2",
        "--response-header-remove",
        "Server",
        "--basic-auth",
        "alice:pw",
        "--verify-webhook",
        "github",
        "--secret",
        "gh-secret",
        "--large-responses",
        "redirect",
    )
    assert parsed == tunnel_options(
        "localhost:8000",
        subdomain="shop",
        host_header="rewrite",
        request_header_add=["X-A: 1", "X-B: 2"],
        response_header_remove=["Server"],
        basic_auth="alice:pw",
        verify_webhook="github",
        webhook_secret="gh-secret",
        large_responses="redirect",
    )
    assert options("3000").large_responses == "refuse"


def test_no_gzip_asks_the_relay_to_pass_responses_as_the_app_encoded_them() -> None:
    assert options("3000").spec().gzip is True
    assert options("3000", "--no-gzip").spec().gzip is False


def test_stream_asks_the_relay_for_streamed_responses() -> None:
    assert options("3000").spec().stream is False
    assert options("3000", "--stream").spec().stream is True


def test_the_webhook_secret_can_stay_out_of_the_process_list(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HATCHWAY_WEBHOOK_SECRET", "from-env")
    assert options("3000", "--verify-webhook", "stripe").webhook_secret == "from-env"
    assert options("3000").webhook_secret is None


def test_an_unknown_large_responses_mode_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.build_parser().parse_args(["http", "3000", "--large-responses", "stream"])
    assert exited.value.code == 2 and "redirect" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["http", "not a port"], "target"),
        (["http", "3000", "--basic-auth", "alice"], "basic-auth"),
        (["http", "3000", "--verify-webhook", "github"], "go together"),
        (["http", "3000", "--request-header-add", "nocolon"], "request-header-add"),
        (["http", "3000", "--subdomain", "Not_Valid"], "subdomain"),
        (["http", "3000", "--token", ""], "no token"),
        (["start", "web"], "defines no tunnels"),
    ],
)
def test_usage_errors_exit_2_naming_the_problem(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv) == 2
    assert says in capsys.readouterr().err


def test_the_rotation_interval_comes_from_the_flag_or_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def rotate_after(*argv: str) -> float:
        args = cli.build_parser().parse_args(["http", "3000", *argv])
        settings = resolve_settings("ws://127.0.0.1:1/connect", "hw_x", "off")
        service = cli.service_for(
            settings, cli._tunnels(args), args, resolve_rotate_after(args.rotate_after)
        )
        return service.session.rotate_after

    assert rotate_after() == protocol.CONNECTION_ROTATE_SECONDS
    assert rotate_after("--rotate-after", "1.5") == 1.5
    monkeypatch.setenv("HATCHWAY_ROTATE_SECONDS", "2")
    assert rotate_after() == 2.0
    assert rotate_after("--rotate-after", "3") == 3.0  # the flag first


@pytest.mark.parametrize(
    ("argv", "env", "grace"),
    [
        ([], None, STOP_GRACE_SECONDS),
        ([], "3", 3.0),
        (["--stop-grace", "0"], "3", 0.0),  # the flag first; 0 stops at once
        (["--stop-grace", str(MAX_STOP_GRACE_SECONDS)], None, MAX_STOP_GRACE_SECONDS),
    ],
)
def test_the_stop_grace_comes_from_the_flag_else_the_environment(
    argv: list[str], env: str | None, grace: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    if env is not None:
        monkeypatch.setenv("HATCHWAY_STOP_GRACE", env)
    args = cli.build_parser().parse_args(["http", "3000", *argv])
    assert resolve_stop_grace(args.stop_grace) == grace


@pytest.mark.parametrize(
    ("argv", "variable", "env", "says"),
    [
        (["--rotate-after", "0.1"], "HATCHWAY_ROTATE_SECONDS", None, "--rotate-after: give 1 to"),
        (["--rotate-after", "9000"], "HATCHWAY_ROTATE_SECONDS", None, "2 hours"),
        ([], "HATCHWAY_ROTATE_SECONDS", "soon", "HATCHWAY_ROTATE_SECONDS: give a number"),
        (["--stop-grace", "-0.1"], "HATCHWAY_STOP_GRACE", None, "--stop-grace: give 0 to 30"),
        (
            ["--stop-grace", str(MAX_STOP_GRACE_SECONDS + 0.1)],
            "HATCHWAY_STOP_GRACE",
            None,
            "give 0 to 30 seconds",
        ),
        ([], "HATCHWAY_STOP_GRACE", "later", "HATCHWAY_STOP_GRACE: give a number"),
    ],
)
def test_a_timing_setting_out_of_bounds_is_a_usage_error(
    argv: list[str],
    variable: str,
    env: str | None,
    says: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if env is not None:
        monkeypatch.setenv(variable, env)
    assert cli.main(["http", "3000", "--token", "hw_x", *argv]) == 2
    assert says in capsys.readouterr().err


@pytest.mark.parametrize(
    ("size", "kept"),
    [
        (None, 1024**2),
        ("2M", 2 * 1024**2),
        ("1048576", 1024**2),
        ("64MiB", 64 * 1024**2),
        ("64 MB", 64 * 1024**2),
        ("0.5g", 512 * 1024**2),
        ("1G", 1024**3),  # the cap itself
    ],
)
def test_the_inspectors_memory_comes_from_the_flag(size: str | None, kept: int) -> None:
    argv = ["http", "3000", *(["--inspect-memory", size] if size else [])]
    args = cli.build_parser().parse_args(argv)
    if args.inspect_memory is not None:
        args.inspect_memory = parse_inspect_memory(args.inspect_memory)
    settings = resolve_settings("ws://127.0.0.1:1/connect", "hw_x", "127.0.0.1:0")
    service = cli.service_for(settings, cli._tunnels(args), args)
    assert service.inspector is not None
    assert service.inspector.capture.max_total_bytes == kept


@pytest.mark.parametrize(
    ("size", "says"),
    [
        ("1048575", "give 1M to 1G"),  # one byte under the floor
        ("1025M", "give 1M to 1G"),  # beyond the cap
        ("32 parsecs", "give a size such as"),
        ("", "give a size such as"),
        ("5TB", "give a size such as"),
        ("M", "give a size such as"),
    ],
)
def test_an_inspector_memory_out_of_bounds_is_a_usage_error(
    size: str, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["http", "3000", "--token", "hw_x", "--inspect-memory", size]) == 2
    assert f"--inspect-memory: {says}" in capsys.readouterr().err


def test_pool_needs_a_subdomain_and_reaches_the_hello() -> None:
    from hatchway.cli import _tunnels, build_parser
    from hatchway.serving.tunnels import OptionError

    pooled = _tunnels(build_parser().parse_args(["http", "3000", "--subdomain", "shop", "--pool"]))
    assert pooled[0].spec().pool and pooled[0].spec().name == "shop"
    with pytest.raises(OptionError, match="subdomain"):
        _tunnels(build_parser().parse_args(["http", "3000", "--pool"]))
