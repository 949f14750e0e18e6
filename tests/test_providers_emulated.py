"""Stores that cannot run here, emulated as their documentation describes them, in front of moto.

tools/lab_proxy.py's ``EMULATIONS`` refuse or ignore the headers each store's documentation says it refuses or
ignores (docs/providers.md names the sources): Cloudflare R2 and Garage refuse object tags, Backblaze B2 refuses tags
and the SHA-256 checksum header, Google Cloud Storage ignores the checksum header and If-None-Match, Garage ignores
If-None-Match, Ceph RGW before Tentacle ignores it on CompleteMultipartUpload. With the default settings (``auto``)
walbucket must probe what each takes, archive and restore through it, and never overwrite an archived object.
Every case runs in synchronous and asynchronous mode.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import run_walbucket
from lab_proxy import EMULATIONS, FaultProxy
from lab_s3 import MotoServer
from test_faults import Site, make_site, stop_workers
from walfactory import segment_bytes

SEG = "000000010000000000000001"
KEY = f"test/wal/{SEG[:16]}/{SEG}"
HISTORY = "00000002.history"

# What auto must pick on each emulated store: (tags, checksum header, conditional multipart completion, conditional
# PUT honoured).
PICKS: dict[str, tuple[bool, str, bool, bool]] = {
    "r2": (False, "sha256", True, True),
    "b2": (False, "md5", True, True),
    "gcs": (True, "sha256", False, False),
    "garage": (False, "sha256", False, False),
    "rgw-pacific": (True, "sha256", False, True),
}


@pytest.fixture(params=["sync", "async"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def proxy(moto_server: MotoServer) -> Iterator[FaultProxy]:
    with FaultProxy(moto_server.url) as running:
        yield running


@pytest.fixture
def site(wb_env: dict[str, str], proxy: FaultProxy, mode: str, data_dir: Path, tmp_path: Path) -> Iterator[Site]:
    env = {**wb_env, "WALBUCKET_ENDPOINT_URL": proxy.url}
    if mode == "async":
        env |= {"WALBUCKET_ASYNC": "on", "WALBUCKET_SPOOL_DIR": str(tmp_path / "spool"),
                "WALBUCKET_ASYNC_IDLE_EXIT": "2", "WALBUCKET_ASYNC_WAIT": "30"}  # fmt: skip
    yield make_site(data_dir, env)
    stop_workers(tmp_path / "spool")


def remembered(site: Site, name: str) -> Any:
    return json.loads((Path(site.env["WALBUCKET_STATE_DIR"]) / name).read_text())


@pytest.mark.parametrize("store", sorted(PICKS))
def test_auto_probes_an_emulated_store_archives_and_restores_and_never_overwrites(
    site: Site, proxy: FaultProxy, s3_client: Any, bucket: str, store: str
) -> None:
    proxy.emulation = EMULATIONS[store]
    tags, checksum, multipart, conditional = PICKS[store]
    data = site.write(SEG)
    history = site.write(HISTORY, b"1\t0/3000000\tno recovery target specified\n")

    pushed = site.push(SEG)

    assert pushed.returncode == 0, pushed.stderr
    assert site.push(HISTORY).returncode == 0
    endpoint = f"{proxy.url}/{bucket}"
    assert remembered(site, "store-features.json")[endpoint] == {
        "tags": tags, "checksum": checksum, "conditional_multipart": multipart,
        "checksum_checked": False,  # moto checks neither header: a wrong value is accepted
    }  # fmt: skip
    assert remembered(site, "conditional-writes.json")[endpoint] is conditional
    stored_tags = s3_client.get_object_tagging(Bucket=bucket, Key=KEY)["TagSet"]
    assert bool(stored_tags) is tags
    assert (
        s3_client.head_object(Bucket=bucket, Key=KEY)["Metadata"]["walbucket-sha256"]
        == hashlib.sha256(data).hexdigest()
    )

    restored = site.get(SEG)
    assert restored.returncode == 0, restored.stderr
    assert site.dest.read_bytes() == data
    assert run_walbucket(["get", HISTORY, "pg_wal/RECOVERYHISTORY"], site.env, cwd=site.data_dir).returncode == 0
    assert (site.pg_wal / "RECOVERYHISTORY").read_bytes() == history

    site.write(SEG, segment_bytes(SEG, fill=b"a second primary"))
    conflict = site.push(SEG)
    assert conflict.returncode == 6, conflict.stderr
    assert (
        s3_client.head_object(Bucket=bucket, Key=KEY)["Metadata"]["walbucket-sha256"]
        == hashlib.sha256(data).hexdigest()
    )


def test_a_store_ignoring_if_none_match_on_multipart_completion_gets_one_conditional_put_and_refuses_a_conflict(
    site: Site, proxy: FaultProxy, s3_client: Any, bucket: str
) -> None:
    """Ceph RGW before Tentacle: a second writer's multipart upload would overwrite; one conditional PUT cannot."""
    proxy.emulation = EMULATIONS["rgw-pacific"]
    site.env |= {"WALBUCKET_MULTIPART_THRESHOLD": "5MiB", "WALBUCKET_MULTIPART_CHUNK_SIZE": "5MiB",
                 "WALBUCKET_COMPRESSION": "none"}  # fmt: skip
    first = site.write(SEG)
    assert site.push(SEG).returncode == 0
    proxy.requests.clear()

    site.write(SEG, segment_bytes(SEG, fill=b"a second primary"))
    for mode in ("auto", "required"):
        result = run_walbucket(["push", f"pg_wal/{SEG}"], {**site.env, "WALBUCKET_CONDITIONAL_WRITES": mode},
                               cwd=site.data_dir)  # fmt: skip
        assert result.returncode == 6, result.stderr

    assert not [r for r in proxy.requests if r.method == "POST" and "uploads" in r.path], "a multipart upload ran"
    stored = s3_client.get_object(Bucket=bucket, Key=KEY)
    assert stored["Metadata"]["walbucket-sha256"] == hashlib.sha256(first).hexdigest()
    assert stored["Body"].read() == first
