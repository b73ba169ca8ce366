"""`make demo`: the local gateway, a sample app and the agent, wired together on this machine.

Prints the tunnel's public URLs once a request through the tunnel has come back from the sample
app, then keeps everything running until Ctrl-C.
"""

from __future__ import annotations

import argparse
import re
import signal
import socket
import sys
import tempfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from hatchway.config import DEFAULT_INSPECT  # noqa: E402
from support.processes import BIN, AgentProcess, Process  # noqa: E402

PREFERRED_RELAY_PORT = 8080
INSPECTOR_LINE = re.compile(r"^Inspector\s+(\S+)")


def pick_port(preferred: int = 0) -> int:
    with socket.socket() as sock:
        # As the gateway binds: a port left in TIME_WAIT by an earlier run is still usable.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", preferred))
        except OSError:
            sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


DEMO_POST = b'{"hello": "from the demo"}'
"""A body the demo sends through the tunnel and expects back from the sample app's echo."""


def fetch_through(relay_port: int, name: str, body: bytes | None = None) -> bytes:
    """GET (or POST ``body`` to) the tunnel's root as a visitor would, addressing the subdomain
    by Host header (``*.localhost`` names resolve in browsers and curl, not in urllib)."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{relay_port}/",
        data=body,
        headers={"Host": f"{name}.localhost:{relay_port}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return bytes(response.read())


def say(text: str) -> None:
    print(f"demo: {text}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args()

    relay_port, app_port = pick_port(PREFERRED_RELAY_PORT), pick_port()
    processes: list[Process] = []
    with tempfile.TemporaryDirectory() as tmp:
        env = {"HATCHWAY_CONFIG": str(Path(tmp) / "config.toml")}
        try:
            say(f"starting the sample app on 127.0.0.1:{app_port}")
            app = Process([sys.executable, str(ROOT / "scripts" / "sample_app.py"), str(app_port)])
            processes.append(app)
            app.wait_for("sample app ready")
            say(f"starting the relay (hatchway-local) on 127.0.0.1:{relay_port}")
            # With no --token, hatchway-local makes one and saves it in the demo's agent config
            # file, where the agent finds it: no token on a command line, where `ps` shows it.
            # The demo keeps nothing once it stops (--store memory).
            relay = Process(
                [str(BIN / "hatchway-local"), "--port", str(relay_port), "--store", "memory"],
                env,
            )
            processes.append(relay)
            relay.wait_for("hatchway-local ready")
            say("starting the agent (hatchway http) and waiting for the relay's welcome")
            agent = AgentProcess(
                str(app_port),
                f"ws://127.0.0.1:{relay_port}/connect",
                None,
                "demo",
                extra=["--inspect", DEFAULT_INSPECT],
                env=env,
            )
            processes.append(agent)
            agent.start()
            inspector = next(
                (m.group(1) for line in agent.output if (m := INSPECTOR_LINE.search(line))), None
            )
            say("checking a GET and a POST with a body through the tunnel")
            if b"Hello from your laptop" not in fetch_through(relay_port, "demo"):
                print("the tunnel answered, but not with the sample app's page", file=sys.stderr)
                return 1
            if fetch_through(relay_port, "demo", DEMO_POST) != DEMO_POST:
                print("the tunnel answered the POST, but not with its body", file=sys.stderr)
                return 1
            print("\nHatchway demo is up: the sample app answers through the tunnel at")
            for url in agent.urls:
                print(f"    {url}")
            if inspector:
                print(f"Inspector (every request, replay, copy as curl): {inspector}")
            path_url = agent.urls[-1]
            print(f"Try:  curl {path_url}")
            print(f"      curl -d 'hello=world' {path_url}      (the sample app echoes a POST)")
            print("      or open the first URL in a browser", flush=True)
            print("Ctrl-C stops everything.", flush=True)
            stop_signals = {signal.SIGINT, signal.SIGTERM}
            signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
            signal.sigwait(stop_signals)
            return 0
        except KeyboardInterrupt:
            return 0
        finally:
            for process in reversed(processes):
                process.kill()


if __name__ == "__main__":
    raise SystemExit(main())
