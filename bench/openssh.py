"""``ssh -R`` on loopback, the peer the benchmark's goals are set against: an OpenSSH server of
its own (Debian's ``openssh-server``, installed when missing) and a client holding a remote
forward from a port on it to the origin, as a user would run it for a tunnel.

The server runs as whoever runs the bench, from a directory of its own: its own host key, a
fresh client key as the only one authorised, public keys only, forwarding allowed. Nothing of
the machine's own ssh setup is read or changed.
"""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
from pathlib import Path

from children import Child, free_port, wait_until_answering

SSHD = "/usr/sbin/sshd"
"""Where Debian's ``openssh-server`` puts the server."""


def ensure_openssh() -> None:
    """The server and the client, from Debian's packages when either is missing."""
    if os.access(SSHD, os.X_OK) and shutil.which("ssh") and shutil.which("ssh-keygen"):
        return
    print("installing openssh-server (Debian package) for the ssh -R peer ...", flush=True)
    packages = ["openssh-server", "openssh-client"]
    try:
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", *packages], check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise RuntimeError(
            f"ssh -R needs OpenSSH's server and client ({exc}): "
            f"apt-get install -y {' '.join(packages)}"
        ) from None


def start_forward(origin_port: int, state: Path) -> tuple[list[Child], int]:
    """An ``sshd`` and an ``ssh -R`` client, ready: the port visitors reach the origin through.
    Whatever started is stopped again if the forward never answers."""
    ensure_openssh()
    home = state / "openssh"
    home.mkdir(exist_ok=True)
    for key in ("host_key", "client_key"):
        if not (home / key).exists():
            keygen = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(home / key)]
            subprocess.run(keygen, check=True)
    shutil.copy(home / "client_key.pub", home / "authorized_keys")
    server_port, forward_port = free_port(), free_port()
    user = getpass.getuser()
    config = home / "sshd_config"
    config.write_text(
        f"Port {server_port}\n"
        "ListenAddress 127.0.0.1\n"
        f'HostKey "{home / "host_key"}"\n'
        f'PidFile "{home / "sshd.pid"}"\n'
        f'AuthorizedKeysFile "{home / "authorized_keys"}"\n'
        f"AllowUsers {user}\n"
        "PermitRootLogin prohibit-password\n"
        "PubkeyAuthentication yes\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "UsePAM no\n"
        "StrictModes no\n"
        "AllowTcpForwarding remote\n"
        "LogLevel INFO\n"
    )
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(exist_ok=True)  # the privilege separation directory it asks for
    started: list[Child] = []
    try:
        started.append(Child([SSHD, "-D", "-e", "-f", str(config)]))
        started[-1].wait_for(f"Server listening on 127.0.0.1 port {server_port}")
        # -F /dev/null: no ssh_config of the user's or the machine's; only this key is offered.
        client = ["ssh", "-F", "/dev/null", "-N", "-i", str(home / "client_key")]
        client += ["-p", str(server_port), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes"]
        client += ["-o", "ExitOnForwardFailure=yes"]
        client += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
        client += ["-o", "LogLevel=ERROR"]
        client += ["-R", f"127.0.0.1:{forward_port}:127.0.0.1:{origin_port}", f"{user}@127.0.0.1"]
        started.append(Child(client))
        wait_until_answering("ssh -R", forward_port, started[-1])
    except BaseException:
        for child in reversed(started):
            child.kill()
        raise
    return started, forward_port
