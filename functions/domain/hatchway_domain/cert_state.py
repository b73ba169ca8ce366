"""Keeps certbot's state (accounts, lineage, renewal configuration) between runs: the
``StateStore`` port with an S3 and a local-directory adapter, and the archive format that
carries certbot's config directory from one temp dir to the next.

certbot writes absolute paths into its renewal configuration and relative symlinks under
``live/``. The archive is a tar of the config directory plus a manifest naming the directory the
state was packed from; restoring extracts it elsewhere (links stay inside it, checked by
``tarfile``'s ``data`` filter) and rewrites the old paths in the renewal files to the new ones.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any, Final, Protocol

from botocore.exceptions import ClientError

from .cert_errors import StateCorrupt

ARCHIVE_KEY: Final = "certbot-state.tar.gz"
"""Name of certbot's packed config directory in a state store."""
MANIFEST_NAME: Final = "hatchway-state.json"
CONFIG_MEMBER: Final = "config"
ARCHIVE_FORMAT: Final = 1
MAX_ARCHIVE_BYTES: Final = 16 * 1024 * 1024
"""Refuse larger archives: a lineage is a few kilobytes per renewal, so this means damage."""
SKIPPED_NAMES: Final = frozenset({".certbot.lock"})
"""Files certbot leaves that must not travel (its directory lock)."""
S3_ENCRYPTION: Final = "AES256"
"""Server-side encryption asked for on every put, whatever the bucket's default is."""
STATE_DIRECTORY_MODE: Final = 0o700
STATE_FILE_MODE: Final = 0o600
"""The state holds the private key and the ACME account key."""


class StateStore(Protocol):
    """Small named blobs that survive between renewal runs."""

    def load(self, key: str) -> bytes | None:
        """The blob saved under ``key``, or None when there is none yet."""
        ...

    def save(self, key: str, data: bytes) -> None: ...


class S3StateStore:
    """Blobs as objects under ``prefix`` in a (versioned, encrypted) bucket."""

    def __init__(self, s3: Any, bucket: str, prefix: str = "") -> None:
        self.s3 = s3
        self.bucket = bucket
        self.prefix = prefix

    def __repr__(self) -> str:
        return f"S3StateStore(s3://{self.bucket}/{self.prefix})"

    def load(self, key: str) -> bytes | None:
        try:
            response = self.s3.get_object(Bucket=self.bucket, Key=self.prefix + key)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in {"NoSuchKey", "404"}:
                return None
            raise
        body: bytes = response["Body"].read()
        return body

    def save(self, key: str, data: bytes) -> None:
        self.s3.put_object(
            Bucket=self.bucket,
            Key=self.prefix + key,
            Body=data,
            ServerSideEncryption=S3_ENCRYPTION,
        )


class DirectoryStateStore:
    """Blobs as files in a private local directory (the self-hosted gateway's state)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"DirectoryStateStore({str(self.path)!r})"

    def _file(self, key: str) -> Path:
        if not key or "/" in key or key.startswith("."):
            raise ValueError(f"not a state key: {key!r}")
        return self.path / key

    def load(self, key: str) -> bytes | None:
        try:
            return self._file(key).read_bytes()
        except FileNotFoundError:
            return None

    def save(self, key: str, data: bytes) -> None:
        target = self._file(key)
        self.path.mkdir(mode=STATE_DIRECTORY_MODE, parents=True, exist_ok=True)
        # Write aside then rename, so a crash never leaves half a state behind.
        fd, temporary = tempfile.mkstemp(dir=self.path, prefix=".tmp-")
        try:
            os.fchmod(fd, STATE_FILE_MODE)
            with os.fdopen(fd, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


def _skip(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    return None if Path(info.name).name in SKIPPED_NAMES else info


def pack_config(config_dir: Path) -> bytes:
    """certbot's config directory as an archive that :func:`unpack_config` restores elsewhere."""
    manifest = json.dumps({"format": ARCHIVE_FORMAT, "config_dir": str(config_dir)}).encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        info = tarfile.TarInfo(MANIFEST_NAME)
        info.size = len(manifest)
        archive.addfile(info, io.BytesIO(manifest))
        archive.add(config_dir, arcname=CONFIG_MEMBER, filter=_skip)
    return buffer.getvalue()


def unpack_config(data: bytes, config_dir: Path) -> None:
    """Restore an archive from :func:`pack_config` into ``config_dir`` (which must not exist)."""
    if len(data) > MAX_ARCHIVE_BYTES:
        raise StateCorrupt(f"the saved certbot state is {len(data)} bytes, more than expected")
    staging = Path(tempfile.mkdtemp(dir=config_dir.parent, prefix=".restore-"))
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
            manifest = _read_manifest(archive)
            members = [m for m in archive.getmembers() if m.name != MANIFEST_NAME]
            for member in members:
                top = Path(member.name).parts[0] if member.name else ""
                if top != CONFIG_MEMBER:
                    raise StateCorrupt(f"unexpected entry {member.name!r} in the saved state")
            # The data filter refuses absolute paths and links leaving the directory.
            archive.extractall(staging, members=members, filter="data")
        (staging / CONFIG_MEMBER).rename(config_dir)
    except (tarfile.TarError, OSError, EOFError, ValueError) as error:
        raise StateCorrupt(f"the saved certbot state cannot be restored: {error}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    # The renewal files also name the run's work, logs and credentials paths, all siblings of
    # the config directory: rewriting the parent moves every one of them.
    _rewrite_paths(config_dir, str(Path(manifest["config_dir"]).parent), str(config_dir.parent))


def _read_manifest(archive: tarfile.TarFile) -> dict[str, Any]:
    try:
        member = archive.getmember(MANIFEST_NAME)
        file = archive.extractfile(member)
        document = json.loads(file.read() if file else b"")
    except (KeyError, ValueError):
        raise StateCorrupt("the saved certbot state has no readable manifest") from None
    if not isinstance(document, dict) or document.get("format") != ARCHIVE_FORMAT:
        raise StateCorrupt("the saved certbot state has an unknown format")
    if not isinstance(document.get("config_dir"), str):
        raise StateCorrupt("the saved certbot state's manifest lacks its config directory")
    return document


def _rewrite_paths(config_dir: Path, old: str, new: str) -> None:
    """Point the renewal configuration's absolute paths at the restored directory."""
    if old == new or old == "/":
        return
    renewal = config_dir / "renewal"
    if not renewal.is_dir():
        return
    for conf in renewal.glob("*.conf"):
        text = conf.read_text()
        conf.write_text(text.replace(old + "/", new + "/"))
