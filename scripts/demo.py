"""`make demo`: the local gateway, a sample app and the agent, wired together on this machine.

Prints the tunnel's public URLs once a request through the tunnel has come back from the sample
app, then keeps everything running until Ctrl-C. ``--once`` stops after that check (for tests).
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
import tempfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from hatchway_relay.tokens import generate_token  # noqa: E402
from support.processes import BIN, AgentProcess, Process  # noqa: E402

PREFERRED_RELAY_PORT = 8080


def pick_port(preferred: int = 0) -> int:
    with socket.socket() as sock:
        # As the gateway binds: a port left in TIME_WAIT by an earlier run is still usable.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", preferred))
        except OSError:
            sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fetch_through(relay_port: int, name: str) -> str:
    """GET the tunnel's root as a visitor would, addressing the subdomain by Host header."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{relay_port}/", headers={"Host": f"{name}.localhost:{relay_port}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read().decode()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--once", action="store_true", help="check the tunnel answers, then stop")
    args = parser.parse_args()

    relay_port, app_port = pick_port(PREFERRED_RELAY_PORT), pick_port()
    processes: list[Process] = []
    with tempfile.TemporaryDirectory() as tmp:
        env = {"HATCHWAY_CONFIG": str(Path(tmp) / "config.toml")}
        try:
            app = Process([sys.executable, str(ROOT / "scripts" / "sample_app.py"), str(app_port)])
            processes.append(app)
            app.wait_for("sample app ready")
            token = generate_token()
            relay = Process(
                [str(BIN / "hatchway-local"), "--port", str(relay_port), "--token", token], env
            )
            processes.append(relay)
            relay.wait_for("hatchway-local ready")
            agent = AgentProcess(
                str(app_port), f"ws://127.0.0.1:{relay_port}/connect", token, "demo", env=env
            )
            processes.append(agent)
            agent.start()
            page = fetch_through(relay_port, "demo")
            if "Hello from your laptop" not in page:
                print("the tunnel answered, but not with the sample app's page", file=sys.stderr)
                return 1
            print("\nHatchway demo is up: the sample app answers through the tunnel at")
            for url in agent.urls:
                print(f"    {url}")
            print(f"(try: curl {agent.urls[-1]} )", flush=True)
            if args.once:
                return 0
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
