"""Lifecycle rules: segments, .partial and .backup files expire; history files and identity.json never do."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conftest import Cli, untimed
from walbucket.admin.lifecycle import RetentionPolicy, lifecycle_configuration, policy_from_options
from walbucket.core.errors import UsageError
from walbucket.core.keylayout import KeyLayout
from walbucket.core.walname import WalKind, WalName, parse_wal_name

PREFIXES = ["", "prod/orders", "/deep/er/prefix/"]
POLICIES = {
    "defaults": RetentionPolicy(),
    "everything": RetentionPolicy(60, 30, 90, 31, "STANDARD_IA", 2, 5),
    "no-abort": RetentionPolicy(wal_days=3, partial_days=1, abort_incomplete_multipart_days=None),
    "glacier-ir": RetentionPolicy(transition_days=1, transition_storage_class="GLACIER_IR"),
}
EXPIRING_ACTIONS = {"Expiration", "Transitions", "NoncurrentVersionExpiration"}


def _wal(name: str) -> WalName:
    wal = parse_wal_name(name)
    assert wal is not None
    return wal


NAMES = {
    WalKind.SEGMENT: [_wal("000000010000000000000003"), _wal("0000000A000000FF000000FF")],
    WalKind.PARTIAL: [_wal("000000010000000A000000FF.partial")],
    WalKind.BACKUP: [_wal("000000010000000000000002.00000028.backup")],
    WalKind.HISTORY: [_wal("00000002.history"), _wal("0000000A.history")],
}


def _matches(rule: dict[str, Any], key: str) -> bool:
    return key.startswith(rule["Filter"]["Prefix"])


@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize("policy", POLICIES.values(), ids=POLICIES.keys())
def test_history_files_and_identity_are_never_expired(prefix: str, policy: RetentionPolicy) -> None:
    layout = KeyLayout(prefix)
    never = [layout.identity_key, *(layout.key(wal) for wal in NAMES[WalKind.HISTORY])]
    for rule in lifecycle_configuration(layout, policy)["Rules"]:
        touching = [key for key in never if _matches(rule, key)]
        if touching:  # only the abort rule may cover them: it removes parts of unfinished uploads, no object
            assert set(rule) == {"ID", "Status", "Filter", "AbortIncompleteMultipartUpload"}, (rule["ID"], touching)


@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize("policy", POLICIES.values(), ids=POLICIES.keys())
def test_each_expiring_kind_has_exactly_its_own_rule(prefix: str, policy: RetentionPolicy) -> None:
    layout = KeyLayout(prefix)
    rules = [r for r in lifecycle_configuration(layout, policy)["Rules"] if EXPIRING_ACTIONS & set(r)]
    for kind in (WalKind.SEGMENT, WalKind.PARTIAL, WalKind.BACKUP):
        for wal in NAMES[kind]:
            assert [r["ID"] for r in rules if _matches(r, layout.key(wal))] == [rules_id(layout, kind)]
    assert {r["Filter"]["Prefix"] for r in rules} == {layout.kind_prefix(k) for k in NAMES if k != WalKind.HISTORY}


def rules_id(layout: KeyLayout, kind: WalKind) -> str:
    return f"walbucket-{kind.value}:{layout.prefix}" if layout.prefix else f"walbucket-{kind.value}"


def test_default_configuration() -> None:
    assert lifecycle_configuration(KeyLayout("/prod/orders/"), RetentionPolicy()) == {
        "Rules": [
            {"ID": "walbucket-segment:prod/orders", "Status": "Enabled", "Filter": {"Prefix": "prod/orders/wal/"},
             "Expiration": {"Days": 14}},
            {"ID": "walbucket-partial:prod/orders", "Status": "Enabled", "Filter": {"Prefix": "prod/orders/partial/"},
             "Expiration": {"Days": 7}},
            {"ID": "walbucket-backup:prod/orders", "Status": "Enabled", "Filter": {"Prefix": "prod/orders/backup/"},
             "Expiration": {"Days": 13}},
            {"ID": "walbucket-abort-multipart:prod/orders", "Status": "Enabled", "Filter": {"Prefix": "prod/orders/"},
             "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}},
        ]
    }  # fmt: skip


def test_without_prefix_the_abort_rule_covers_the_bucket() -> None:
    rules = lifecycle_configuration(KeyLayout(""), RetentionPolicy())["Rules"]
    assert [(r["ID"], r["Filter"]["Prefix"]) for r in rules] == [
        ("walbucket-segment", "wal/"),
        ("walbucket-partial", "partial/"),
        ("walbucket-backup", "backup/"),
        ("walbucket-abort-multipart", ""),
    ]


def test_transition_applies_to_segments_and_noncurrent_expiry_to_every_expiring_rule() -> None:
    rules = lifecycle_configuration(KeyLayout("p"), POLICIES["everything"])["Rules"]
    assert [r.get("Transitions") for r in rules] == [[{"Days": 31, "StorageClass": "STANDARD_IA"}], None, None, None]
    assert [r.get("NoncurrentVersionExpiration") for r in rules] == [{"NoncurrentDays": 5}] * 3 + [None]
    assert [r.get("Expiration") for r in rules] == [{"Days": 60}, {"Days": 30}, {"Days": 90}, None]
    assert rules[3]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 2}


def test_backup_files_expire_a_day_before_segments_unless_told_otherwise() -> None:
    assert RetentionPolicy(wal_days=40).effective_backup_days == 39
    assert RetentionPolicy(wal_days=1).effective_backup_days == 1
    assert RetentionPolicy(wal_days=40, backup_days=90).effective_backup_days == 90


INVALID = [
    ({"wal_days": 0}, "invalid retention 'wal_days': 0 is not a whole number of days, 1 or more"),
    ({"partial_days": -1}, "invalid retention 'partial_days': -1 is not a whole number of days, 1 or more"),
    ({"noncurrent_days": 1.5}, "invalid retention 'noncurrent_days': 1.5 is not a whole number of days, 1 or more"),
    ({"backup_days": True}, "invalid retention 'backup_days': True is not a whole number of days, 1 or more"),
    ({"transition_days": 10, "transition_storage_class": "GLACIER"}, "invalid transition storage class 'GLACIER'"),
    ({"transition_days": 10, "transition_storage_class": "DEEP_ARCHIVE"},
     "invalid transition storage class 'DEEP_ARCHIVE'"),
    ({"wal_days": 60, "transition_days": 29},
     "invalid transition after 29 days: S3 transitions to STANDARD_IA after 30 days"),
    ({"transition_days": 14, "transition_storage_class": "INTELLIGENT_TIERING"},
     "invalid transition after 14 days: segments expire after 14 days"),
]  # fmt: skip


@pytest.mark.parametrize(("options", "message"), INVALID)
def test_invalid_policies_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError) as caught:
        RetentionPolicy(**options)
    assert caught.value.message == message


def test_glacier_hint_names_the_readable_classes() -> None:
    with pytest.raises(UsageError) as caught:
        RetentionPolicy(transition_days=5, transition_storage_class="GLACIER")
    assert caught.value.hint is not None
    assert "GLACIER_IR, INTELLIGENT_TIERING, ONEZONE_IA, STANDARD_IA" in caught.value.hint


def test_options_keep_defaults_for_none_and_turn_optional_actions_off_with_zero() -> None:
    assert policy_from_options({"wal_days": None, "command": "lifecycle", "verbose": False}) == RetentionPolicy()
    off = policy_from_options({"abort_incomplete_multipart_days": 0, "transition_days": 0, "wal_days": 30})
    assert off == RetentionPolicy(wal_days=30, abort_incomplete_multipart_days=None, transition_days=None)


def test_a_prefix_too_long_for_a_rule_id_is_refused() -> None:
    long_prefix = "p" * 230
    with pytest.raises(UsageError, match="is too long for a lifecycle rule ID"):
        lifecycle_configuration(KeyLayout(long_prefix), RetentionPolicy())
    assert lifecycle_configuration(KeyLayout(long_prefix[:229]), RetentionPolicy())


@pytest.mark.parametrize("prefix", ["", "prod/orders"])
@pytest.mark.parametrize("policy", POLICIES.values(), ids=POLICIES.keys())
def test_moto_accepts_the_configuration(s3_client: Any, bucket: str, prefix: str, policy: RetentionPolicy) -> None:
    configuration = lifecycle_configuration(KeyLayout(prefix), policy)
    s3_client.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration=configuration)
    assert s3_client.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"] == configuration["Rules"]


# --- the CLI ------------------------------------------------------------------------------------------------------


def test_cli_prints_the_configuration(cli: Cli, tmp_path: Path) -> None:
    result = cli.run(["lifecycle"], cwd=tmp_path)
    assert (result.returncode, result.stderr) == (0, "")
    assert json.loads(result.stdout) == lifecycle_configuration(
        KeyLayout(cli.env["WALBUCKET_PREFIX"]), RetentionPolicy()
    )


def test_cli_options_set_the_policy(cli: Cli, tmp_path: Path) -> None:
    args = ["--wal-days", "60", "--partial-days", "30", "--backup-days", "90", "--transition-days", "31",
            "--transition-class", "ONEZONE_IA", "--abort-multipart-days", "0", "--noncurrent-days", "5"]  # fmt: skip
    result = cli.run(["lifecycle", *args], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    expected = RetentionPolicy(60, 30, 90, 31, "ONEZONE_IA", None, 5)
    assert json.loads(result.stdout) == lifecycle_configuration(KeyLayout(cli.env["WALBUCKET_PREFIX"]), expected)


def test_cli_refuses_a_class_restore_command_cannot_read(cli: Cli, tmp_path: Path) -> None:
    args = ["lifecycle", "--transition-days", "40", "--transition-class", "DEEP_ARCHIVE", "--wal-days", "90"]
    result = cli.run(args, cwd=tmp_path)
    assert (result.returncode, result.stdout) == (2, "")
    assert untimed(result.stderr).splitlines()[0] == (
        "walbucket lifecycle: ERROR: invalid transition storage class 'DEEP_ARCHIVE' (exit 2)"
    )
    assert result.stderr.splitlines()[1].startswith("HINT: use one of GLACIER_IR, INTELLIGENT_TIERING")
