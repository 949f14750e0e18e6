"""Check a setup before PostgreSQL relies on it: each thing push and get need, tried for real, as a checklist.

Credentials, the bucket, what uploads may carry (tags, a checksum header) and whether a multipart upload's completion
honours If-None-Match, every permission (write, read, head, list, read tags) on a probe object
``<prefix>/probe/check-<random>`` (left in place: walbucket needs no delete permission), whether the endpoint refuses
a second create of one key, the archive identity against the local cluster, and, given a way to force a WAL switch,
that the switched-out segment arrives in the archive. One item failing does not stop the others, except that
nothing is asked of a store without credentials or out of reach.
"""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from walbucket.archive.conditional import PLAIN, probe_conditional_writes
from walbucket.archive.identity import load_identity
from walbucket.core.errors import ConfigError, IntegrityError, StoreUnavailable, WalbucketError
from walbucket.core.identity import ArchiveIdentity
from walbucket.core.keylayout import TAG_KIND, KeyLayout
from walbucket.core.walheader import read_control_system_id
from walbucket.core.walname import WalKind, parse_wal_name
from walbucket.store.protocol import Store, StoreFeatures

__all__ = ["CheckItem", "CheckReport", "psql_switch_wal", "run_checks"]

Status = Literal["OK", "FAIL", "WARN", "SKIP"]
_Result = tuple[Status, str] | tuple[Status, str, str]  # status, detail and maybe a hint
_PROBE_META = {"walbucket-check": "1"}
_PROBE_TAGS = {TAG_KIND: "probe"}
_IDENTITY_HINT = "each cluster needs its own bucket or prefix; check the 'prefix' setting"


@dataclass(frozen=True, slots=True)
class CheckItem:
    name: str
    status: Status
    detail: str
    hint: str = ""

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status, "detail": self.detail, "hint": self.hint}


@dataclass(frozen=True, slots=True)
class CheckReport:
    items: tuple[CheckItem, ...]

    @property
    def failed(self) -> tuple[CheckItem, ...]:
        return tuple(item for item in self.items if item.status == "FAIL")

    def to_json(self) -> dict[str, Any]:
        return {"ok": not self.failed, "items": [item.to_json() for item in self.items]}


class _Checklist:
    def __init__(self) -> None:
        self.items: list[CheckItem] = []
        self.reachable = True  # False once the store cannot be asked anything (no credentials, outage)

    def add(self, name: str, status: Status, detail: str, hint: str = "") -> None:
        self.items.append(CheckItem(name, status, detail, hint))

    def run(self, name: str, step: Callable[[], _Result]) -> bool:
        """Run one store step; a walbucket error is its FAIL. Return True when it passed (OK or WARN)."""
        if not self.reachable:
            self.add(name, "SKIP", "the store cannot be reached")
            return False
        try:
            result = step()
        except WalbucketError as exc:
            self.add(name, "FAIL", exc.message, exc.hint or "")
            if isinstance(exc, (StoreUnavailable, ConfigError)):
                self.reachable = False
            return False
        self.add(name, *result)
        return result[0] in ("OK", "WARN")


def run_checks(
    store: Store,
    layout: KeyLayout,
    *,
    settings_detail: str,
    credentials: Callable[[], str | None],
    conditional_mode: str,
    data_dir: Path,
    tags_mode: str = "auto",
    checksum_mode: str = "auto",
    switch_wal: Callable[[], str] | None = None,
    wait_timeout: float = 60.0,
    token: str | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> CheckReport:
    """Run every check in order and return the checklist; never raises a walbucket error."""
    check = _Checklist()
    check.add("settings", "OK", settings_detail)
    _check_credentials(check, credentials)
    key = layout.probe_key(f"check-{token or secrets.token_hex(8)}")
    body = f"walbucket check probe {key}\n".encode()
    check.run("bucket reachable", lambda: _reachable(store, layout.kind_prefix(WalKind.HISTORY)))
    honoured: list[bool] = []
    check.run(
        "conditional writes", lambda: _conditional(store.with_features(PLAIN), layout, conditional_mode, honoured)
    )
    probed: list[StoreFeatures] = []
    conditional = bool(honoured and honoured[0]) and conditional_mode != "off"
    check.run("tags on upload", lambda: _probe_features(store, layout, tags_mode, conditional, probed))
    features = _effective(probed[0], tags_mode, checksum_mode) if probed else StoreFeatures()
    if probed:
        check.add("checksum header", *_checksum(probed[0], checksum_mode))
        check.add("conditional multipart completion", *_multipart(probed[0], conditional_mode))
    store = store.with_features(features)
    write_name = "write with tags (s3:PutObject)" if features.tags else "write (s3:PutObject)"
    written = check.run(write_name, lambda: _write(store, key, body, features.tags))
    on_probe: list[tuple[str, Callable[[], _Result]]] = [
        ("read (s3:GetObject)", lambda: _read(store, key, body)),
        ("head (s3:GetObject)", lambda: _head(store, key, body)),
        ("list (s3:ListBucket)", lambda: _listed(store, key)),
    ]
    if features.tags:
        on_probe.append(("read tags (s3:GetObjectTagging)", lambda: _tags(store, key)))
    for name, step in on_probe:
        if written:
            check.run(name, step)
        else:
            check.add(name, "SKIP", "needs the probe object, which could not be written")
    identity: list[ArchiveIdentity | None] = []
    check.run("archive identity", lambda: _identity(store, layout, identity))
    _check_local(check, data_dir, identity[0] if identity else None)
    if switch_wal is None:
        check.add("archiving", "SKIP", "give --dsn to force a WAL switch and watch the segment arrive")
    else:
        check.run("archiving", lambda: _archiving(store, layout, switch_wal, wait_timeout, sleep))
    return CheckReport(tuple(check.items))


def _check_credentials(check: _Checklist, credentials: Callable[[], str | None]) -> None:
    try:
        source = credentials()
    except ConfigError as exc:
        source, hint = None, exc.hint or exc.message
    else:
        hint = "set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile, or an instance role for the server's user"
    if source is None:
        check.add("credentials", "FAIL", "no AWS credentials found", hint)
        check.reachable = False
    else:
        check.add("credentials", "OK", f"found ({source})")


def _reachable(store: Store, prefix: str) -> _Result:
    found = sum(1 for _ in store.list(prefix))
    return "OK", f"listed '{prefix}': {found} history files"


def _probe_features(
    store: Store, layout: KeyLayout, tags_mode: str, conditional: bool, out: list[StoreFeatures]
) -> _Result:
    features = store.probe_features(layout.probe_key(f"features-{secrets.token_hex(6)}"), conditional=conditional)
    out.append(features)
    if features.tags:
        return "OK", "object tags are kept"
    detail = "refused or dropped: pushes send no tags; lifecycle rules filter by prefix, checks use metadata and keys"
    if tags_mode == "on":
        return "FAIL", detail, 'set object_tags = "auto" or "off" for this endpoint'
    return "WARN", detail, "nothing to do: walbucket's safety does not depend on tags"


def _effective(probed: StoreFeatures, tags_mode: str, checksum_mode: str) -> StoreFeatures:
    tags = probed.tags if tags_mode == "auto" else tags_mode == "on"
    checksum = probed.checksum if checksum_mode == "auto" else checksum_mode
    return StoreFeatures(
        tags, checksum, probed.conditional_multipart, probed.checksum_checked and checksum == probed.checksum
    )


def _checksum(probed: StoreFeatures, mode: str) -> _Result:
    if mode not in ("auto", probed.checksum) and _STRENGTH[mode] < _STRENGTH[probed.checksum]:
        return "WARN", f'the endpoint takes {probed.checksum}, upload_checksum = "{mode}" sends {mode}'
    header = {"sha256": "x-amz-checksum-sha256", "md5": "Content-MD5"}.get(probed.checksum)
    if header is None:
        hint = "an Object Lock bucket needs Content-MD5 or a checksum header on every PUT"
        return "WARN", "no checksum header accepted: a body damaged in transit is found only when get verifies it", hint
    if not probed.checksum_checked:
        hint = "nothing to do: get verifies SHA-256 and size before recovery replays a file"
        return "WARN", f"{header} accepted but not checked: a body damaged in transit is found only by get", hint
    if probed.checksum == "sha256":
        return "OK", "x-amz-checksum-sha256 checked: the store refuses a body damaged in transit"
    return "OK", "Content-MD5 checked (x-amz-checksum-sha256 is not): pushes send Content-MD5"


_STRENGTH = {"none": 0, "md5": 1, "sha256": 2}


def _multipart(probed: StoreFeatures, mode: str) -> _Result:
    if probed.conditional_multipart:
        return "OK", "a second completion of one key is refused (If-None-Match)"
    detail = "ignored: uploads above multipart_threshold go as one conditional PUT (up to 5 GiB) instead"
    if mode == "off":
        return "WARN", detail
    return "WARN", detail, "nothing to do: PostgreSQL's largest segment (1 GiB) fits one PUT"


def _write(store: Store, key: str, body: bytes, tags: bool) -> _Result:
    if not store.create(key, body, _PROBE_META, _PROBE_TAGS):
        return "FAIL", f"'{key}' already exists"
    return "OK", f"created '{key}' with tags" if tags else f"created '{key}'"


def _read(store: Store, key: str, body: bytes) -> _Result:
    stored = store.read(key)
    if stored is None or stored.body != body or dict(stored.info.metadata) != _PROBE_META:
        return "FAIL", f"'{key}' reads back different from what was written (body or metadata)"
    return "OK", "body and metadata read back"


def _head(store: Store, key: str, body: bytes) -> _Result:
    info = store.head(key)
    if info is None or info.size != len(body) or dict(info.metadata) != _PROBE_META:
        return "FAIL", f"HEAD of '{key}' does not show its size and metadata"
    return "OK", "size and metadata"


def _listed(store: Store, key: str) -> _Result:
    if not any(info.key == key for info in store.list(key)):
        return "FAIL", f"'{key}' is not listed", "a store that does not list new keys at once is not supported"
    return "OK", "the probe object is listed"


def _tags(store: Store, key: str) -> _Result:
    tags = store.tags(key)
    if tags != _PROBE_TAGS:
        return "FAIL", f"'{key}' has tags {tags}, not {_PROBE_TAGS}", "the endpoint must store object tags"
    return "OK", "tags read back"


def _conditional(store: Store, layout: KeyLayout, mode: str, out: list[bool]) -> _Result:
    out.append(probe_conditional_writes(store, layout))
    if out[-1]:
        if mode == "off":
            hint = 'set conditional_writes = "required" (or "auto") so that pushes never overwrite'
            return "WARN", 'honoured, but conditional_writes = "off" does not use them', hint
        return "OK", "a second create of one key is refused (If-None-Match)"
    detail = "ignored: a second create of one key overwrote it"
    if mode == "required":
        return "FAIL", detail, 'use an endpoint that honours If-None-Match, or conditional_writes = "auto"'
    return "WARN", detail, "push falls back to HEAD-then-PUT, which a racing writer (split brain) can defeat"


def _identity(store: Store, layout: KeyLayout, out: list[ArchiveIdentity | None]) -> _Result:
    try:
        identity = load_identity(store, layout)
    except IntegrityError as exc:
        return "FAIL", exc.message
    out.append(identity)
    if identity is None:
        return "OK", "none yet: the first push of a segment creates it"
    return (
        "OK",
        f"system id {identity.system_id}, PostgreSQL {identity.pg_version}, {identity.seg_size >> 20} MiB segments",
    )


def _check_local(check: _Checklist, data_dir: Path, identity: ArchiveIdentity | None) -> None:
    system_id = read_control_system_id(data_dir)
    if system_id is None:
        check.add("local cluster", "SKIP", f"no readable global/pg_control in '{data_dir}' (give --pgdata)")
        return
    version = _pg_version(data_dir)
    if identity is None:
        check.add("local cluster", "OK", f"system id {system_id}; the archive has no identity to compare with")
    elif system_id != identity.system_id:
        check.add("local cluster", "FAIL", f"system id {system_id} differs from the archive's {identity.system_id}",
                  _IDENTITY_HINT)  # fmt: skip
    elif version is not None and version != identity.pg_version:
        check.add("local cluster", "FAIL", f"PostgreSQL {version} differs from the archive's {identity.pg_version}",
                  "after pg_upgrade, archive to a new prefix")  # fmt: skip
    else:
        check.add("local cluster", "OK", f"system id {system_id} matches the archive")


def _pg_version(data_dir: Path) -> int | None:
    """The major version in PG_VERSION, as identity.json writes it (9.6 -> 96, 15 -> 15)."""
    try:
        text = (data_dir / "PG_VERSION").read_text().strip()
    except OSError:
        return None
    major, _, minor = text.partition(".")
    if not major.isdigit() or (minor and not minor.isdigit()):
        return None
    return int(major) * 10 + int(minor) if minor else int(major)


def _archiving(
    store: Store, layout: KeyLayout, switch_wal: Callable[[], str], timeout: float, sleep: Callable[[float], None]
) -> _Result:
    try:
        name = switch_wal()
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        return "FAIL", f"cannot force a WAL switch: {exc}", "check --dsn and --psql; the role must be a superuser"
    wal = parse_wal_name(name)
    if wal is None:
        return "FAIL", f"pg_switch_wal() answered '{name}', not a WAL file name"
    started = time.monotonic()
    while store.head(layout.key(wal)) is None:
        if time.monotonic() - started > timeout:
            return (
                "FAIL",
                f"'{name}' did not arrive in the archive within {timeout:g}s",
                ("check archive_mode and archive_command, and pg_stat_archiver.last_failed_wal and the server log"),
            )
        sleep(0.5)
    return "OK", f"'{name}' arrived in the archive after {time.monotonic() - started:.1f}s"


# pg_switch_wal() on a server that wrote no WAL since the last switch switches nothing and names the segment before
# the current one, long archived: write a record first (non-transactional, so at once; any wal_level), in the
# subquery, which runs before the switch.
_SWITCH_WAL_SQL = (
    "SELECT pg_walfile_name(pg_switch_wal()) "
    "FROM (SELECT pg_logical_emit_message(false, 'walbucket-check', 'switch')) AS written"
)


def psql_switch_wal(psql: str, dsn: str, timeout: float = 30.0) -> str:
    """Force a WAL switch with psql and return the name of the segment it completed."""
    proc = subprocess.run(
        [psql, "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", dsn, "-c", _SWITCH_WAL_SQL],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        raise ValueError(lines[-1] if lines else f"psql exited with {proc.returncode}")
    return proc.stdout.strip()
