"""terraform/: every file parses, the module's lifecycle rules are walbucket's, its IAM policies say what they should,
and checkov finds nothing that a ``#checkov:skip`` comment does not justify. No terraform binary runs here: the
module is evaluated from its syntax tree (tests/tfeval.py) with the variables each test gives it.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import hcl2
import pytest

from tfeval import Module
from walbucket.admin.lifecycle import RetentionPolicy, lifecycle_configuration
from walbucket.core.keylayout import TAG_KIND, TAG_PG_VERSION, TAG_SYSTEM_ID, TAG_TIMELINE, KeyLayout
from walbucket.core.walname import WalKind, parse_wal_name

ROOT = Path(__file__).resolve().parent.parent
TERRAFORM = ROOT / "terraform"
MODULE = TERRAFORM / "modules" / "walbucket-archive"
EXAMPLES = sorted(p for p in (TERRAFORM / "examples").iterdir() if p.is_dir())
BUCKET = "pg-wal"
BUCKET_ARN = f"arn:aws:s3:::{BUCKET}"
APPLIED = {"aws_s3_bucket": {"this": {"id": BUCKET, "bucket": BUCKET, "arn": BUCKET_ARN}}}
KMS_KEY = "arn:aws:kms:eu-west-1:123456789012:key/00000000-0000-0000-0000-000000000000"
ARCHIVER = "arn:aws:iam::123456789012:role/pg-archiver"
RESTORER = "arn:aws:iam::123456789012:role/pg-restorer"
WAL_NAMES = [
    "000000010000000000000003",
    "000000010000000A000000FF.partial",
    "00000002.history",
    "000000010000000000000002.00000028.backup",
]
EXPIRING = (WalKind.SEGMENT, WalKind.PARTIAL, WalKind.BACKUP)
LAYOUT_TAGS = {TAG_KIND, TAG_TIMELINE, TAG_SYSTEM_ID, TAG_PG_VERSION}


def module(**variables: Any) -> Module:
    return Module(MODULE, {"bucket_name": BUCKET, **variables}, APPLIED)


def _one(blocks: list[dict[str, Any]]) -> dict[str, Any]:
    assert len(blocks) == 1, blocks
    return blocks[0]


def _s3_filter(block: dict[str, Any]) -> dict[str, Any]:
    if block.get("and"):
        both = _one(block["and"])
        tags = [{"Key": k, "Value": v} for k, v in both.get("tags", {}).items()]
        return {"And": {"Prefix": both.get("prefix", ""), "Tags": tags}}
    if block.get("tag"):
        tag = _one(block["tag"])
        return {"Tag": {"Key": tag["key"], "Value": tag["value"]}}
    return {"Prefix": block.get("prefix", "")}


_RULE_BLOCKS = {"id", "status", "filter", "expiration", "transition", "noncurrent_version_expiration"}
_RULE_BLOCKS |= {"abort_incomplete_multipart_upload"}


def s3_lifecycle(rendered: dict[str, Any]) -> dict[str, Any]:
    """Translate an evaluated aws_s3_bucket_lifecycle_configuration into the S3 API's LifecycleConfiguration."""
    rules = []
    for rule in rendered["rule"]:
        assert set(rule) <= _RULE_BLOCKS, f"translate {set(rule) - _RULE_BLOCKS} here first"
        out: dict[str, Any] = {"ID": rule["id"], "Status": rule["status"], "Filter": _s3_filter(_one(rule["filter"]))}
        if rule.get("expiration"):
            out["Expiration"] = {"Days": _one(rule["expiration"])["days"]}
        if rule.get("transition"):
            out["Transitions"] = [{"Days": t["days"], "StorageClass": t["storage_class"]} for t in rule["transition"]]
        if rule.get("noncurrent_version_expiration"):
            days = _one(rule["noncurrent_version_expiration"])["noncurrent_days"]
            out["NoncurrentVersionExpiration"] = {"NoncurrentDays": days}
        if rule.get("abort_incomplete_multipart_upload"):
            days = _one(rule["abort_incomplete_multipart_upload"])["days_after_initiation"]
            out["AbortIncompleteMultipartUpload"] = {"DaysAfterInitiation": days}
        rules.append(out)
    return {"Rules": rules}


def _filter_tags(rule_filter: dict[str, Any]) -> list[dict[str, str]]:
    return [rule_filter["Tag"]] if "Tag" in rule_filter else list(rule_filter.get("And", {}).get("Tags", []))


def module_lifecycle(**variables: Any) -> dict[str, Any]:
    return s3_lifecycle(module(**variables).render("resource", "aws_s3_bucket_lifecycle_configuration", "this"))


def iam_json(rendered: dict[str, Any]) -> dict[str, Any]:
    """Translate an evaluated aws_iam_policy_document into the policy JSON its ``json`` attribute holds."""
    statements = []
    for st in rendered["statement"]:
        out: dict[str, Any] = {"Sid": st["sid"], "Effect": st.get("effect", "Allow")}
        for hcl_name, json_name in (("actions", "Action"), ("not_actions", "NotAction"), ("resources", "Resource")):
            if hcl_name in st:
                out[json_name] = st[hcl_name]
        for principal in st.get("principals", []):
            out["Principal"] = "*" if principal["type"] == "*" else {principal["type"]: principal["identifiers"]}
        for condition in st.get("condition", []):
            out.setdefault("Condition", {}).setdefault(condition["test"], {})[condition["variable"]] = condition[
                "values"
            ]
        statements.append(out)
    return {"Version": "2012-10-17", "Statement": statements}


def policy(name: str, **variables: Any) -> dict[str, Any]:
    return iam_json(module(**variables).render("data", "aws_iam_policy_document", name))


def allowed(document: dict[str, Any]) -> set[str]:
    return {a for st in document["Statement"] if st["Effect"] == "Allow" for a in st.get("Action", [])}


def statement(document: dict[str, Any], sid: str) -> dict[str, Any]:
    return _one([st for st in document["Statement"] if st["Sid"] == sid])


def written_keys(layout: KeyLayout) -> list[str]:
    """Every key walbucket writes under ``layout``."""
    names = [parse_wal_name(name) for name in WAL_NAMES]
    return [layout.identity_key, layout.probe_key(), *(layout.key(n) for n in names if n is not None)]


# --- parsing ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(TERRAFORM.rglob("*.tf")), ids=lambda p: str(p.relative_to(TERRAFORM)))
def test_every_terraform_file_parses(path: Path) -> None:
    assert hcl2.loads(path.read_text())


def test_module_references_only_what_it_declares() -> None:
    text = "\n".join(p.read_text() for p in MODULE.glob("*.tf"))
    m = module()
    variables = {labels[0] for labels in m.names("variable")}
    assert set(re.findall(r"\bvar\.(\w+)", text)) <= variables
    assert set(re.findall(r"\blocal\.(\w+)", text)) <= m.local_names()


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_examples_pass_only_module_variables_and_read_only_module_outputs(example: Path) -> None:
    m = module()
    variables = {labels[0]: m.attributes(m.body("variable", *labels)) for labels in m.names("variable")}
    outputs = {labels[0] for labels in m.names("output")}
    call = Module(example).body("module", "wal_archive")
    passed = set(Module.attributes(call)) - {"source"}
    assert passed <= set(variables)
    assert {name for name, attrs in variables.items() if "default" not in attrs} <= passed
    assert set(re.findall(r"module\.wal_archive\.(\w+)", (example / "main.tf").read_text())) <= outputs
    assert (example / "README.md").is_file()


# --- lifecycle rules: the module's are walbucket's ----------------------------------------------------------------

CASES = {
    "defaults": ({}, "", RetentionPolicy()),
    "prefix": ({"prefix": "/prod/orders/"}, "prod/orders", RetentionPolicy()),
    "everything": (
        {
            "prefix": "prod/orders", "wal_retention_days": 90, "partial_retention_days": 30,
            "backup_retention_days": 120, "transition_days": 30, "transition_storage_class": "ONEZONE_IA",
            "abort_incomplete_multipart_days": 3, "versioning": True, "noncurrent_version_days": 5,
        },
        "prod/orders",
        RetentionPolicy(90, 30, 120, 30, "ONEZONE_IA", 3, 5),
    ),
    "object-lock-versions": ({"object_lock_days": 10}, "", RetentionPolicy(noncurrent_days=7)),
    "minio": (
        {"prefix": "a", "abort_incomplete_multipart_days": None, "transition_days": 1,
         "transition_storage_class": "GLACIER_IR"},
        "a",
        RetentionPolicy(abort_incomplete_multipart_days=None, transition_days=1, transition_storage_class="GLACIER_IR"),
    ),
}  # fmt: skip


@pytest.mark.parametrize(("variables", "prefix", "retention"), CASES.values(), ids=CASES.keys())
def test_module_rules_equal_walbucket_lifecycle(
    variables: dict[str, Any], prefix: str, retention: RetentionPolicy
) -> None:
    assert module_lifecycle(**variables) == lifecycle_configuration(KeyLayout(prefix), retention)


def test_module_defaults_are_the_retention_policy_defaults() -> None:
    m, defaults = module(), RetentionPolicy()
    assert not m.var("versioning")  # so no noncurrent rule, as RetentionPolicy().noncurrent_days is None
    assert defaults.noncurrent_days is None
    assert (m.var("wal_retention_days"), m.var("partial_retention_days")) == (defaults.wal_days, defaults.partial_days)
    assert (m.var("backup_retention_days"), m.var("transition_days")) == (defaults.backup_days, None)
    assert m.var("transition_storage_class") == defaults.transition_storage_class
    assert m.var("abort_incomplete_multipart_days") == defaults.abort_incomplete_multipart_days


@pytest.mark.parametrize("prefix", ["", "prod/orders"])
def test_rule_prefixes_and_tags_are_exactly_the_key_layout(prefix: str) -> None:
    layout = KeyLayout(prefix)
    rules = module_lifecycle(prefix=prefix)["Rules"]
    expiring = [r for r in rules if {"Expiration", "Transitions", "NoncurrentVersionExpiration"} & set(r)]
    assert sorted(r["Filter"]["Prefix"] for r in expiring) == sorted(layout.kind_prefix(k) for k in EXPIRING)
    never = [layout.identity_key, layout.key(parse_wal_name("00000002.history"))]  # type: ignore[arg-type]
    for key in never:
        assert not [r["ID"] for r in expiring if key.startswith(r["Filter"]["Prefix"])], key
    for key in written_keys(layout):
        assert any(key.startswith(r["Filter"]["Prefix"]) for r in rules), f"no abort rule covers '{key}'"
    tags = {tag["Key"] for rule in rules for tag in _filter_tags(rule["Filter"])}
    assert tags <= LAYOUT_TAGS  # prefix filters today; a tag filter must name a tag walbucket writes


def test_moto_stores_the_module_rules_as_the_walbucket_rules(s3_client: Any, bucket: str) -> None:
    variables, prefix, retention = CASES["everything"]
    s3_client.create_bucket(Bucket=f"{bucket}-py")
    s3_client.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration=module_lifecycle(**variables))
    s3_client.put_bucket_lifecycle_configuration(
        Bucket=f"{bucket}-py", LifecycleConfiguration=lifecycle_configuration(KeyLayout(prefix), retention)
    )
    stored = s3_client.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert stored == s3_client.get_bucket_lifecycle_configuration(Bucket=f"{bucket}-py")["Rules"]
    assert [r["ID"] for r in stored] == [r["ID"] for r in module_lifecycle(**variables)["Rules"]]


# --- IAM policies -------------------------------------------------------------------------------------------------

ARCHIVER_ACTIONS = {"s3:ListBucket", "s3:PutObject", "s3:PutObjectTagging", "s3:GetObject", "s3:GetObjectTagging"}
ARCHIVER_ACTIONS |= {"s3:AbortMultipartUpload"}
RESTORER_ACTIONS = {"s3:ListBucket", "s3:GetObject", "s3:GetObjectTagging", "s3:GetLifecycleConfiguration"}
IF_NONE_MATCH_REQUIRED = {"Null": {"s3:if-none-match": ["true"]}, "Bool": {"s3:ObjectCreationOperation": ["true"]}}


@pytest.mark.parametrize("prefix", ["", "/prod/orders/"])
@pytest.mark.parametrize(("name", "actions"), [("archiver", ARCHIVER_ACTIONS), ("restorer", RESTORER_ACTIONS)])
def test_policy_grants_its_actions_on_every_key_walbucket_writes_and_nothing_else(
    prefix: str, name: str, actions: set[str]
) -> None:
    layout = KeyLayout(prefix)
    document = policy(name, prefix=prefix)
    assert allowed(document) == actions
    assert not [a for a in allowed(document) if "Delete" in a]
    objects = [r for st in document["Statement"] if "s3:GetObject" in st.get("Action", []) for r in st["Resource"]]
    assert objects == [f"{BUCKET_ARN}/{layout.prefix}/*" if layout.prefix else f"{BUCKET_ARN}/*"]
    for key in written_keys(layout):
        assert fnmatch.fnmatchcase(f"{BUCKET_ARN}/{key}", objects[0]), key
    listing = statement(document, "ListThePrefix")
    assert listing["Resource"] == [BUCKET_ARN]
    on_bucket = {a for st in document["Statement"] if st["Resource"] == [BUCKET_ARN] for a in st.get("Action", [])}
    assert on_bucket == actions & {"s3:ListBucket", "s3:GetLifecycleConfiguration"}
    if layout.prefix:
        assert listing["Condition"] == {"StringLike": {"s3:prefix": [f"{layout.prefix}/*"]}}
        assert not fnmatch.fnmatchcase(f"{BUCKET_ARN}/other/wal/x", objects[0])
    else:
        assert "Condition" not in listing


def test_archiver_cannot_create_without_if_none_match_unless_turned_off() -> None:
    deny = statement(policy("archiver"), "CreateOnlyWithIfNoneMatch")
    assert (deny["Effect"], deny["Action"], deny["Condition"]) == ("Deny", ["s3:PutObject"], IF_NONE_MATCH_REQUIRED)
    assert deny["Resource"] == [f"{BUCKET_ARN}/*"]
    off = policy("archiver", require_if_none_match=False)
    assert not [st for st in off["Statement"] if st["Effect"] == "Deny"]


def test_kms_key_adds_key_use_to_both_policies() -> None:
    archiver, restorer = policy("archiver", kms_key_arn=KMS_KEY), policy("restorer", kms_key_arn=KMS_KEY)
    assert statement(archiver, "UseTheBucketKey")["Action"] == ["kms:GenerateDataKey", "kms:Decrypt"]
    assert statement(restorer, "DecryptWithTheBucketKey")["Resource"] == [KMS_KEY]
    assert not [a for a in allowed(policy("archiver")) if a.startswith("kms:")]


def test_bucket_policy_denies_plain_http_to_everyone() -> None:
    document = policy("bucket")
    assert [st["Sid"] for st in document["Statement"]] == ["DenyInsecureTransport"]
    deny = document["Statement"][0]
    assert (deny["Effect"], deny["Principal"], deny["Action"]) == ("Deny", "*", ["s3:*"])
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": ["false"]}}


def test_bucket_policy_denies_named_principals_what_they_must_never_do() -> None:
    document = policy(
        "bucket", prefix="prod/orders", archiver_principal_arns=[ARCHIVER], restorer_principal_arns=[RESTORER]
    )
    never = statement(document, "ArchiverNeverDeletes")
    assert never["Principal"] == {"AWS": [ARCHIVER]}
    assert {"s3:DeleteObject", "s3:DeleteObjectVersion", "s3:PutLifecycleConfiguration"} <= set(never["Action"])
    assert statement(document, "ArchiverCreatesOnlyWithIfNoneMatch")["Condition"] == IF_NONE_MATCH_REQUIRED
    reads_only = statement(document, "RestorerOnlyReads")
    assert (reads_only["Effect"], reads_only["Principal"]) == ("Deny", {"AWS": [RESTORER]})
    assert set(reads_only["NotAction"]) == RESTORER_ACTIONS
    assert statement(document, "ListThePrefix")["Principal"] == {"AWS": [ARCHIVER, RESTORER]}
    rules = statement(document, "RestorerReadsTheLifecycleRules")  # for walbucket verify
    assert (rules["Principal"], rules["Action"], rules["Resource"]) == (
        {"AWS": [RESTORER]}, ["s3:GetLifecycleConfiguration"], [BUCKET_ARN]
    )  # fmt: skip
    assert allowed(document) == ARCHIVER_ACTIONS | RESTORER_ACTIONS


def test_iam_accepts_the_policy_documents(moto_server: Any) -> None:
    iam = boto3.client(
        "iam", endpoint_url=moto_server.url, region_name="us-east-1",
        aws_access_key_id="walbucket-test", aws_secret_access_key="walbucket-test-secret",
    )  # fmt: skip
    for name in ("archiver", "restorer"):
        document = json.dumps(policy(name, prefix="prod/orders", kms_key_arn=KMS_KEY))
        iam.create_policy(PolicyName=f"walbucket-test-{os.getpid()}-{name}", PolicyDocument=document)


# --- checkov ------------------------------------------------------------------------------------------------------

SKIP_COMMENT = re.compile(r"#\s*checkov:skip=(?P<check>[A-Z0-9_]+)(?::(?P<reason>.*))?")


def _checkov() -> str | None:
    # The Makefile installs checkov in a virtualenv of its own, $(VENV)/checkov, and exports CHECKOV.
    candidates = [os.environ.get("CHECKOV"), str(Path(sys.executable).parent.parent / "checkov" / "bin" / "checkov")]
    for candidate in [*candidates, shutil.which("checkov")]:
        if candidate and (ROOT / candidate).is_file():
            return str(ROOT / candidate)
    return None


@pytest.fixture(scope="session")
def checkov_results() -> dict[str, Any]:
    """Run checkov once over terraform/ and return its results (failed, skipped and passed checks)."""
    executable = _checkov()
    if executable is None:  # `make test` and `make unit` install it: missing is a broken setup, never a skip
        pytest.fail("checkov is not installed: `make checkov` installs it into $(VENV)/checkov")
    proc = subprocess.run(
        [executable, "-d", str(TERRAFORM), "--framework", "terraform", "--compact", "-o", "json", "--skip-download"],
        capture_output=True, text=True, timeout=300, check=False, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode in (0, 1), proc.stderr[-2000:]  # 1: some check failed, which the tests below report
    report = json.loads(proc.stdout)
    reports = report if isinstance(report, list) else [report]
    assert [r["check_type"] for r in reports] == ["terraform"]
    assert reports[0]["summary"]["parsing_errors"] == 0
    return dict(reports[0]["results"])


def _skip_comments() -> dict[str, str]:
    found = {}
    for path in TERRAFORM.rglob("*.tf"):
        for match in SKIP_COMMENT.finditer(path.read_text()):
            found[match["check"]] = (match["reason"] or "").strip()
    return found


def test_checkov_finds_no_failure(checkov_results: dict[str, Any]) -> None:
    failed = [f"{c['check_id']} {c['resource']} ({c['file_path']})" for c in checkov_results["failed_checks"]]
    assert failed == [], "fix it, or justify it with '#checkov:skip=CKV_...:reason' in the resource"


def test_every_checkov_skip_has_a_reason_and_is_needed(checkov_results: dict[str, Any]) -> None:
    comments = _skip_comments()
    assert {check: reason for check, reason in comments.items() if len(reason) < 20} == {}
    skipped = {c["check_id"] for c in checkov_results["skipped_checks"]}
    assert skipped == set(comments)
    assert len(checkov_results["passed_checks"]) >= 40  # the module was read, not silently ignored
