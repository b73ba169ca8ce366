"""certbot's state survives between runs: the archive carries its config directory (symlinks
and renewal files included) to another temp dir, refuses archives that would write outside it,
and both state stores keep blobs the way the job expects (private files; encrypted S3 puts)."""

from __future__ import annotations

import io
import json
import os
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from hatchway_domain.cert_errors import StateCorrupt
from hatchway_domain.cert_state import (
    MANIFEST_NAME,
    DirectoryStateStore,
    S3StateStore,
    pack_config,
    unpack_config,
)
from support.aws_credentials import use_fake_credentials

LINEAGE = "t.example.test"


def certbot_like_config(root: Path) -> Path:
    """The layout certbot leaves: archive files, relative live links, absolute renewal paths."""
    config = root / "config"
    archive = config / "archive" / LINEAGE
    live = config / "live" / LINEAGE
    archive.mkdir(parents=True)
    live.mkdir(parents=True)
    (config / "renewal").mkdir()
    for kind in ("cert", "chain", "fullchain", "privkey"):
        (archive / f"{kind}1.pem").write_text(f"{kind} v1")
        (archive / f"{kind}2.pem").write_text(f"{kind} v2")
        (live / f"{kind}.pem").symlink_to(f"../../archive/{LINEAGE}/{kind}2.pem")
    (archive / "privkey2.pem").chmod(0o600)
    (config / "renewal" / f"{LINEAGE}.conf").write_text(
        f"archive_dir = {config}/archive/{LINEAGE}\n"
        f"cert = {config}/live/{LINEAGE}/cert.pem\n"
        "[renewalparams]\n"
        f"config_dir = {config}\n"
        f"work_dir = {root}/work\n"
        f"dns_cloudflare_credentials = {root}/cloudflare.ini\n"
    )
    (config / ".certbot.lock").write_text("")
    return config


def test_a_restored_config_directory_keeps_its_links_and_points_at_its_new_place(
    tmp_path: Path,
) -> None:
    packed = pack_config(certbot_like_config(tmp_path / "first-run"))
    restored = tmp_path / "second-run" / "config"
    restored.parent.mkdir()

    unpack_config(packed, restored)

    live = restored / "live" / LINEAGE
    assert (live / "fullchain.pem").read_text() == "fullchain v2"
    assert os.readlink(live / "privkey.pem") == f"../../archive/{LINEAGE}/privkey2.pem"
    assert stat.S_IMODE((live / "privkey.pem").stat().st_mode) == 0o600
    renewal = (restored / "renewal" / f"{LINEAGE}.conf").read_text()
    assert str(tmp_path / "first-run") not in renewal
    assert f"cert = {restored}/live/{LINEAGE}/cert.pem" in renewal
    assert f"work_dir = {restored.parent}/work" in renewal
    assert f"dns_cloudflare_credentials = {restored.parent}/cloudflare.ini" in renewal
    assert not (restored / ".certbot.lock").exists()
    assert sorted(p.name for p in restored.parent.iterdir()) == ["config"]


def archive_with(entries: list[tarfile.TarInfo], manifest: Any = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        if manifest is not False:
            data = json.dumps(manifest or {"format": 1, "config_dir": "/tmp/x/config"}).encode()
            info = tarfile.TarInfo(MANIFEST_NAME)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for entry in entries:
            archive.addfile(entry, io.BytesIO(b"x" * entry.size) if entry.isfile() else None)
    return buffer.getvalue()


def link(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    return info


def file(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = 1
    return info


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(archive_with([link("config/live/x", "/etc/passwd")]), id="absolute-link"),
        pytest.param(archive_with([link("config/live/x", "../../../../x")]), id="escaping-link"),
        pytest.param(archive_with([file("config/../../evil")]), id="escaping-path"),
        pytest.param(archive_with([file("elsewhere/file")]), id="outside-config"),
        pytest.param(archive_with([file("config/a")], manifest=False), id="no-manifest"),
        pytest.param(archive_with([], manifest={"format": 99}), id="unknown-format"),
        pytest.param(b"not an archive", id="garbage"),
    ],
)
def test_an_unsafe_or_unreadable_archive_is_refused(tmp_path: Path, data: bytes) -> None:
    with pytest.raises(StateCorrupt):
        unpack_config(data, tmp_path / "config")

    assert list(tmp_path.iterdir()) == []
    assert not (tmp_path.parent / "evil").exists()


def test_the_directory_store_keeps_private_files_and_knows_what_is_missing(
    tmp_path: Path,
) -> None:
    store = DirectoryStateStore(tmp_path / "state")

    assert store.load("certbot-state.tar.gz") is None
    store.save("certbot-state.tar.gz", b"one")
    store.save("certbot-state.tar.gz", b"two")

    assert store.load("certbot-state.tar.gz") == b"two"
    saved = tmp_path / "state" / "certbot-state.tar.gz"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == ["certbot-state.tar.gz"]
    with pytest.raises(ValueError):
        store.save("../escape", b"x")


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    use_fake_credentials(monkeypatch)
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="state")
        yield client


def test_the_s3_store_asks_for_encryption_and_knows_what_is_missing(s3: Any) -> None:
    store = S3StateStore(s3, "state", "certbot/t.example.test/")

    assert store.load("acm-import.json") is None
    store.save("acm-import.json", b"{}")

    assert store.load("acm-import.json") == b"{}"
    head = s3.head_object(Bucket="state", Key="certbot/t.example.test/acm-import.json")
    assert head["ServerSideEncryption"] == "AES256"
