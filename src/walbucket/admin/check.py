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
from typing import Any

from walbucket.admin import check_store
from walbucket.admin.check_store import Result, Status
from walbucket.archive.conditional import PLAIN
from walbucket.core.errors import ConfigError, StoreUnavailable, WalbucketError
from walbucket.core.identity import ArchiveIdentity
from walbucket.core.keylayout import KeyLayout
from walbucket.core.walheader import read_control_system_id
from walbucket.core.walname import WalKind, parse_wal_name
from walbucket.store.protocol import Store, StoreFeatures

__all__ = ["CheckItem", "CheckReport", "psql_switch_wal", "run_checks"]

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

    def run(self, name: str, step: Callable[[], Result]) -> bool:
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
    clock: Callable[[], float] = time.monotonic,
) -> CheckReport:
    """Run every check in order and return the checklist; never raises a walbucket error.

    ``sleep`` and ``clock`` pace the wait for the switched segment (tests pass a clock that sleeping advances).
    """
    check = _Checklist()
    check.add("settings", "OK", settings_detail)
    _check_credentials(check, credentials)
    key = layout.probe_key(f"check-{token or secrets.token_hex(8)}")
    body = f"walbucket check probe {key}\n".encode()
    check.run("bucket reachable", lambda: check_store.reachable(store, layout.kind_prefix(WalKind.HISTORY)))
    honoured: list[bool] = []
    plain = store.with_features(PLAIN)
    check.run("conditional writes", lambda: check_store.conditional(plain, layout, conditional_mode, honoured))
    probed: list[StoreFeatures] = []
    conditional = bool(honoured and honoured[0]) and conditional_mode != "off"
    check.run("tags on upload", lambda: check_store.probe_features(store, layout, tags_mode, conditional, probed))
    features = check_store.effective(probed[0], tags_mode, checksum_mode) if probed else StoreFeatures()
    if probed:
        check.add("checksum header", *check_store.checksum(probed[0], checksum_mode))
        check.add("conditional multipart completion", *check_store.multipart(probed[0], conditional_mode))
    store = store.with_features(features)
    write_name = "write with tags (s3:PutObject)" if features.tags else "write (s3:PutObject)"
    written = check.run(write_name, lambda: check_store.write(store, key, body, features.tags))
    on_probe: list[tuple[str, Callable[[], Result]]] = [
        ("read (s3:GetObject)", lambda: check_store.read(store, key, body)),
        ("head (s3:GetObject)", lambda: check_store.head(store, key, body)),
        ("list (s3:ListBucket)", lambda: check_store.listed(store, key)),
    ]
    if features.tags:
        on_probe.append(("read tags (s3:GetObjectTagging)", lambda: check_store.tags(store, key)))
    for name, step in on_probe:
        if written:
            check.run(name, step)
        else:
            check.add(name, "SKIP", "needs the probe object, which could not be written")
    identity: list[ArchiveIdentity | None] = []
    check.run("archive identity", lambda: check_store.identity(store, layout, identity))
    _check_local(check, data_dir, identity[0] if identity else None)
    if switch_wal is None:
        check.add("archiving", "SKIP", "give --dsn to force a WAL switch and watch the segment arrive")
    else:
        check.run("archiving", lambda: _archiving(store, layout, switch_wal, wait_timeout, sleep, clock))
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
    store: Store,
    layout: KeyLayout,
    switch_wal: Callable[[], str],
    timeout: float,
    sleep: Callable[[float], None],
    clock: Callable[[], float],
) -> Result:
    try:
        name = switch_wal()
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        return "FAIL", f"cannot force a WAL switch: {exc}", "check --dsn and --psql; the role must be a superuser"
    wal = parse_wal_name(name)
    if wal is None:
        return "FAIL", f"pg_switch_wal() answered '{name}', not a WAL file name"
    started = clock()
    while store.head(layout.key(wal)) is None:
        if clock() - started > timeout:
            return (
                "FAIL",
                f"'{name}' did not arrive in the archive within {timeout:g}s",
                ("check archive_mode and archive_command, and pg_stat_archiver.last_failed_wal and the server log"),
            )
        sleep(0.5)
    return "OK", f"'{name}' arrived in the archive after {clock() - started:.1f}s"


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
