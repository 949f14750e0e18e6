"""Settings from a TOML document and the environment: the environment wins, every bad value is named."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from walbucket.core.errors import ConfigError
from walbucket.core.settings import CONFIG_ENV, Settings, load_settings, setting_env_name

MIB = 1 << 20
BUCKET = {"WALBUCKET_BUCKET": "wal-archive"}
CREDENTIALS_IN_URL = "a user or password in the URL is not allowed; credentials come from the AWS SDK's chain only"

# One valid spelling per setting, as the environment gives it, and the value it becomes.
SAMPLES: dict[str, tuple[str, Any]] = {
    "bucket": ("my-bucket.1", "my-bucket.1"),
    "prefix": ("/pg/main/", "pg/main"),
    "endpoint_url": ("http://127.0.0.1:9000", "http://127.0.0.1:9000"),
    "region": ("eu-west-1", "eu-west-1"),
    "path_style": ("yes", True),
    "profile": ("archiver", "archiver"),
    "verify_tls": ("off", False),
    "ca_bundle": ("/etc/ssl/ca.pem", "/etc/ssl/ca.pem"),
    "compression": ("lz4", "lz4"),
    "compression_level": ("5", 5),
    "storage_class": ("standard_ia", "STANDARD_IA"),
    "sse": ("aws:kms", "aws:kms"),
    "sse_kms_key_id": ("alias/wal", "alias/wal"),
    "retry_budget": ("2.5", 2.5),
    "timeout": ("10", 10.0),
    "conditional_writes": ("required", "required"),
    "object_tags": ("off", "off"),
    "upload_checksum": ("md5", "md5"),
    "multipart_threshold": ("128MiB", 128 * MIB),
    "multipart_chunk_size": ("8M", 8 * MIB),
    "restore_partial": ("true", True),
    "state_dir": ("/var/lib/walbucket", "/var/lib/walbucket"),
    "async_mode": ("on", True),
    "spool_dir": ("/var/spool/walbucket", "/var/spool/walbucket"),
    "async_lookahead": ("32", 32),
    "async_queue_bytes": ("1GiB", 1 << 30),
    "async_workers": ("8", 8),
    "async_idle_exit": ("5", 5.0),
    "async_wait": ("30", 30.0),
}
# The setting's name where it differs from the field that holds it ("async" is a Python keyword).
SETTING_NAME = {"async_mode": "async"}
# Settings that only make sense together with another one.
COMPANIONS: dict[str, dict[str, str]] = {
    "ca_bundle": {"WALBUCKET_VERIFY_TLS": "true"},
    "sse_kms_key_id": {"WALBUCKET_SSE": "aws:kms"},
    "verify_tls": {},
}


def config_error(file_doc: dict[str, Any], env: dict[str, str], config_name: str = "config file") -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_settings(file_doc, env, config_name)
    return caught.value


def test_samples_cover_every_setting() -> None:
    assert set(SAMPLES) == {f.name for f in dataclasses.fields(Settings)}


@pytest.mark.parametrize("field", sorted(SAMPLES))
def test_every_setting_has_an_environment_name(field: str) -> None:
    env_name = setting_env_name(field)
    assert env_name == "WALBUCKET_" + SETTING_NAME.get(field, field).upper()
    raw, value = SAMPLES[field]
    settings = load_settings({}, {**BUCKET, env_name: raw, **COMPANIONS.get(field, {})})
    assert getattr(settings, field) == value


@pytest.mark.parametrize("field", sorted(SAMPLES))
def test_every_setting_can_come_from_the_file(field: str) -> None:
    raw, value = SAMPLES[field]
    companions = {k.removeprefix("WALBUCKET_").lower(): v for k, v in COMPANIONS.get(field, {}).items()}
    settings = load_settings({"bucket": "wal-archive", SETTING_NAME.get(field, field): raw, **companions}, {})
    assert getattr(settings, field) == value


def test_defaults() -> None:
    settings = load_settings({}, BUCKET)
    assert settings == Settings(bucket="wal-archive")
    assert (settings.compression, settings.level, settings.conditional_writes) == ("zstd", 1, "auto")
    assert (settings.multipart_threshold, settings.multipart_chunk_size) == (64 * MIB, 16 * MIB)
    assert settings.restore_partial is False
    assert settings.state_dir is None


def test_environment_wins_over_the_file() -> None:
    settings = load_settings(
        {"bucket": "file-bucket", "prefix": "from-file", "compression": "lz4"},
        {"WALBUCKET_BUCKET": "env-bucket", "WALBUCKET_COMPRESSION": "none"},
    )
    assert (settings.bucket, settings.prefix, settings.compression) == ("env-bucket", "from-file", "none")


def test_file_values_keep_their_toml_types() -> None:
    settings = load_settings(
        {
            "bucket": "wal-b1",
            "path_style": True,
            "compression_level": -1,
            "retry_budget": 5,
            "multipart_threshold": 32 * MIB,
            "restore_partial": False,
        },
        {},
    )
    assert (settings.path_style, settings.compression_level, settings.retry_budget) == (True, -1, 5.0)
    assert (settings.multipart_threshold, settings.restore_partial) == (32 * MIB, False)


def test_other_environment_variables_are_ignored() -> None:
    env = {**BUCKET, "HOME": "", "PATH": "/bin", "AWS_REGION": "x", "WALBUCKETX": "1", CONFIG_ENV: "/etc/wb.toml"}
    assert load_settings({}, env).bucket == "wal-archive"


def test_missing_bucket() -> None:
    error = config_error({"prefix": "p"}, {})
    assert error.message == "missing setting 'bucket'"
    assert error.hint == "set WALBUCKET_BUCKET or 'bucket' in the file named by --config or WALBUCKET_CONFIG"


def test_an_empty_environment_variable_unsets_the_file_value() -> None:
    settings = load_settings({"bucket": "wal-b1", "prefix": "from-file", "region": "r"}, {"WALBUCKET_PREFIX": ""})
    assert (settings.prefix, settings.region) == ("", "r")
    assert config_error({"bucket": "wal-b1"}, {"WALBUCKET_BUCKET": ""}).message == "missing setting 'bucket'"


def test_unknown_setting_in_the_file_is_named() -> None:
    assert config_error({"bucket": "wal-b1", "compresion": "zstd"}, {}).message == (
        "unknown setting 'compresion' in config file"
    )
    assert config_error({"bucket": "wal-b1", "x": 1}, {}, "'/etc/wb.toml'").message == (
        "unknown setting 'x' in '/etc/wb.toml'"
    )


def test_unknown_setting_in_the_environment_is_named() -> None:
    assert config_error({}, {**BUCKET, "WALBUCKET_COMPRESION": "zstd"}).message == (
        "unknown setting WALBUCKET_COMPRESION in the environment"
    )


@pytest.mark.parametrize(
    ("env_name", "value", "reason"),
    [
        ("WALBUCKET_BUCKET", "My_Bucket", "not a valid bucket name"),
        ("WALBUCKET_BUCKET", "-bucket", "not a valid bucket name"),
        ("WALBUCKET_BUCKET", "ab", "not a valid bucket name"),
        ("WALBUCKET_BUCKET", "bucket-", "not a valid bucket name"),
        ("WALBUCKET_BUCKET", "b" * 64, "not a valid bucket name"),
        ("WALBUCKET_BUCKET", "   ", "expected a non-empty string"),
        ("WALBUCKET_PREFIX", "a//b", "invalid prefix 'a//b'"),
        ("WALBUCKET_PREFIX", "a/../b", "invalid prefix 'a/../b'"),
        ("WALBUCKET_ENDPOINT_URL", "127.0.0.1:9000", "expected an http:// or https:// URL"),
        ("WALBUCKET_ENDPOINT_URL", "ftp://host", "expected an http:// or https:// URL"),
        ("WALBUCKET_ENDPOINT_URL", "http://user:secret@minio:9000", CREDENTIALS_IN_URL),
        ("WALBUCKET_ENDPOINT_URL", "https://AKIAEXAMPLE@s3.example.com/", CREDENTIALS_IN_URL),
        ("WALBUCKET_ENDPOINT_URL", "https://:secret@s3.example.com", CREDENTIALS_IN_URL),
        ("WALBUCKET_PATH_STYLE", "maybe", "expected true or false"),
        ("WALBUCKET_VERIFY_TLS", "2", "expected true or false"),
        ("WALBUCKET_RESTORE_PARTIAL", "enabled", "expected true or false"),
        ("WALBUCKET_COMPRESSION", "gzip", "expected one of none, zstd, lz4"),
        ("WALBUCKET_COMPRESSION", "ZSTD", "expected one of none, zstd, lz4"),
        ("WALBUCKET_COMPRESSION_LEVEL", "high", "invalid literal for int() with base 10: 'high'"),
        ("WALBUCKET_SSE", "aes256", "expected one of AES256, aws:kms"),
        ("WALBUCKET_CONDITIONAL_WRITES", "sometimes", "expected one of auto, required, off"),
        ("WALBUCKET_RETRY_BUDGET", "0", "expected seconds, more than 0 and at most 86400"),
        ("WALBUCKET_RETRY_BUDGET", "-5", "expected seconds, more than 0 and at most 86400"),
        ("WALBUCKET_RETRY_BUDGET", "86401", "expected seconds, more than 0 and at most 86400"),
        ("WALBUCKET_RETRY_BUDGET", "nan", "expected seconds, more than 0 and at most 86400"),
        ("WALBUCKET_TIMEOUT", "inf", "expected seconds, more than 0 and at most 86400"),
        ("WALBUCKET_TIMEOUT", "30s", "could not convert string to float: '30s'"),
        ("WALBUCKET_MULTIPART_THRESHOLD", "64 TB", "expected a size such as 67108864, 64MiB or 64M"),
        ("WALBUCKET_MULTIPART_THRESHOLD", "1.5G", "expected a size such as 67108864, 64MiB or 64M"),
        ("WALBUCKET_MULTIPART_CHUNK_SIZE", "-8M", "expected a size such as 67108864, 64MiB or 64M"),
        ("WALBUCKET_MULTIPART_CHUNK_SIZE", "MiB", "expected a size such as 67108864, 64MiB or 64M"),
        (
            "WALBUCKET_STORAGE_CLASS",
            "GLACIER",
            "GLACIER objects cannot be read back without a restore request; restore_command would fail",
        ),
        (
            "WALBUCKET_STORAGE_CLASS",
            "deep_archive",
            "DEEP_ARCHIVE objects cannot be read back without a restore request; restore_command would fail",
        ),
        ("WALBUCKET_REGION", " ", "expected a non-empty string"),
    ],
)
def test_invalid_environment_value_is_named(env_name: str, value: str, reason: str) -> None:
    env = {**BUCKET, env_name: value}
    assert config_error({}, env).message == f"invalid setting {env_name}: {reason}"


def test_credentials_in_the_endpoint_url_are_refused_without_echoing_them() -> None:
    error = config_error({"bucket": "wal-b1", "endpoint_url": "http://user:secret@minio:9000"}, {}, "'/etc/wb.toml'")
    assert error.message == f"invalid setting 'endpoint_url' in '/etc/wb.toml': {CREDENTIALS_IN_URL}"
    assert error.hint is None
    assert "secret" not in error.message


def test_an_at_sign_in_the_endpoint_urls_path_is_not_a_credential() -> None:
    assert (
        load_settings({}, {**BUCKET, "WALBUCKET_ENDPOINT_URL": "https://gw/s3@v2"}).endpoint_url == "https://gw/s3@v2"
    )


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("path_style", "sometimes", "expected true or false"),
        ("compression_level", True, "expected a whole number"),
        ("compression_level", 2.5, "invalid literal for int() with base 10: '2.5'"),
        ("region", 5, "expected a non-empty string"),
        ("prefix", 5, "expected a string"),
        ("retry_budget", 0, "expected seconds, more than 0 and at most 86400"),
        ("multipart_chunk_size", "lots", "expected a size such as 67108864, 64MiB or 64M"),
    ],
)
def test_invalid_file_value_is_named(field: str, value: Any, reason: str) -> None:
    error = config_error({"bucket": "wal-b1", field: value}, {}, "'/etc/wb.toml'")
    assert error.message == f"invalid setting '{field}' in '/etc/wb.toml': {reason}"


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("6291456", 6 * MIB),
        ("6291456b", 6 * MIB),
        ("6144k", 6 * MIB),
        ("6144KiB", 6 * MIB),
        ("6144 kb", 6 * MIB),
        ("6M", 6 * MIB),
        ("6mb", 6 * MIB),
        ("6 MiB", 6 * MIB),
        ("1G", 1 << 30),
        ("1gib", 1 << 30),
        (" 8MiB ", 8 * MIB),
    ],
)
def test_sizes_take_binary_units(text: str, size: int) -> None:
    settings = load_settings(
        {}, {**BUCKET, "WALBUCKET_MULTIPART_CHUNK_SIZE": text, "WALBUCKET_MULTIPART_THRESHOLD": "1G"}
    )
    assert settings.multipart_chunk_size == size


@pytest.mark.parametrize(("text", "value"), [("1", True), ("TRUE", True), ("On", True), ("0", False), ("No", False)])
def test_booleans_take_the_usual_spellings(text: str, value: bool) -> None:
    assert load_settings({}, {**BUCKET, "WALBUCKET_PATH_STYLE": text}).path_style is value


@pytest.mark.parametrize(
    ("codec", "level", "message"),
    [
        ("zstd", "23", "invalid setting 'compression_level': zstd takes -7..22"),
        ("zstd", "-8", "invalid setting 'compression_level': zstd takes -7..22"),
        ("lz4", "17", "invalid setting 'compression_level': lz4 takes 0..16"),
        ("lz4", "-1", "invalid setting 'compression_level': lz4 takes 0..16"),
        ("none", "1", "invalid setting 'compression_level': none takes 0..0"),
    ],
)
def test_compression_level_out_of_the_codecs_range(codec: str, level: str, message: str) -> None:
    env = {**BUCKET, "WALBUCKET_COMPRESSION": codec, "WALBUCKET_COMPRESSION_LEVEL": level}
    assert config_error({}, env).message == message


@pytest.mark.parametrize(("codec", "level"), [("zstd", -7), ("zstd", 22), ("lz4", 0), ("lz4", 16), ("none", 0)])
def test_compression_level_within_the_codecs_range(codec: str, level: int) -> None:
    settings = load_settings({"compression": codec, "compression_level": level}, BUCKET)
    assert settings.level == level


@pytest.mark.parametrize(("codec", "level"), [("zstd", 1), ("lz4", 0), ("none", 0)])
def test_level_defaults_to_the_codecs_default(codec: str, level: int) -> None:
    assert load_settings({"compression": codec}, BUCKET).level == level


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"WALBUCKET_SSE_KMS_KEY_ID": "alias/wal"},
            "invalid setting 'sse_kms_key_id': it needs sse = \"aws:kms\"",
        ),
        (
            {"WALBUCKET_SSE_KMS_KEY_ID": "alias/wal", "WALBUCKET_SSE": "AES256"},
            "invalid setting 'sse_kms_key_id': it needs sse = \"aws:kms\"",
        ),
        (
            {"WALBUCKET_MULTIPART_CHUNK_SIZE": "4MiB"},
            "invalid setting 'multipart_chunk_size': S3 parts are at least 5MiB",
        ),
        (
            {"WALBUCKET_MULTIPART_CHUNK_SIZE": str(5 * MIB - 1)},
            "invalid setting 'multipart_chunk_size': S3 parts are at least 5MiB",
        ),
        (
            {"WALBUCKET_MULTIPART_THRESHOLD": "8MiB"},  # below the default chunk of 16MiB
            "invalid setting 'multipart_threshold': it must be at least multipart_chunk_size",
        ),
        (
            {"WALBUCKET_MULTIPART_THRESHOLD": "6MiB", "WALBUCKET_MULTIPART_CHUNK_SIZE": "7MiB"},
            "invalid setting 'multipart_threshold': it must be at least multipart_chunk_size",
        ),
        (
            {"WALBUCKET_CA_BUNDLE": "/etc/ca.pem", "WALBUCKET_VERIFY_TLS": "false"},
            "invalid setting 'ca_bundle': it has no effect with verify_tls = false",
        ),
    ],
)
def test_invalid_combinations_are_named(env: dict[str, str], message: str) -> None:
    assert config_error({}, {**BUCKET, **env}).message == message


def test_smallest_multipart_sizes_are_accepted() -> None:
    env = {**BUCKET, "WALBUCKET_MULTIPART_CHUNK_SIZE": "5MiB", "WALBUCKET_MULTIPART_THRESHOLD": "5MiB"}
    settings = load_settings({}, env)
    assert (settings.multipart_chunk_size, settings.multipart_threshold) == (5 * MIB, 5 * MIB)


@pytest.mark.parametrize(
    ("env", "state_dir"),
    [
        ({"HOME": "/home/postgres"}, "/home/postgres/.cache/walbucket"),
        ({"HOME": "/home/postgres", "WALBUCKET_STATE_DIR": "/srv/wb"}, "/srv/wb"),
        ({"HOME": ""}, None),
        ({}, None),
    ],
)
def test_state_dir_defaults_to_a_cache_under_home(env: dict[str, str], state_dir: str | None) -> None:
    assert load_settings({}, {**BUCKET, **env}).state_dir == state_dir


def test_settings_are_frozen() -> None:
    settings = load_settings({}, BUCKET)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.bucket = "other"  # type: ignore[misc]


@pytest.mark.parametrize("exit_attr", ["exit_code", "get_exit_code"])
def test_config_error_exit_codes(exit_attr: str) -> None:
    assert getattr(ConfigError, exit_attr) == {"exit_code": 3, "get_exit_code": 203}[exit_attr]


@pytest.mark.parametrize(
    ("file_doc", "env", "region"),
    [
        ({}, {"AWS_REGION": "eu-west-2"}, "eu-west-2"),  # boto3 ignores AWS_REGION; the newer SDKs read it first
        ({}, {"AWS_REGION": "eu-west-2", "WALBUCKET_REGION": "eu-north-1"}, "eu-north-1"),
        ({"region": "ap-south-1"}, {"AWS_REGION": "eu-west-2"}, "ap-south-1"),
        ({}, {"AWS_REGION": " "}, None),
        ({}, {}, None),  # boto3 decides: AWS_DEFAULT_REGION, the profile's region
    ],
)
def test_the_region_setting_wins_over_aws_region_which_wins_over_botos_own_chain(
    file_doc: dict[str, str], env: dict[str, str], region: str | None
) -> None:
    assert load_settings(file_doc, {**BUCKET, **env}).region == region
