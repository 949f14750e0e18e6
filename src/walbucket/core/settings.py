"""Frozen Settings built from a TOML document and an environment mapping (the environment wins).

Never reads os.environ or files itself: the CLI passes both in. Every setting has one name in the TOML file
(``bucket``) and one in the environment (``WALBUCKET_BUCKET``); docs/configuration.md lists them all.
Credentials are not settings: they come from the AWS SDK's standard chain only (botocore's, as in boto3).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from walbucket.core.codecs import CODECS
from walbucket.core.errors import ConfigError
from walbucket.core.keylayout import normalize_prefix
from walbucket.core.sources import (
    CONFIG_ENV,
    DEFAULT_ASYNC_WAIT,
    ENV_PREFIX,
    RENAMED,
    default_spool_dir,
    default_state_dir,
    parse_flag,
    parse_seconds,
    parse_text,
    raw_settings,
)

__all__ = ["CONFIG_ENV", "ENV_PREFIX", "Settings", "load_settings", "setting_env_name"]

_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.\-_]{1,61}[a-z0-9]")
_UNREADABLE_CLASSES = {"GLACIER", "DEEP_ARCHIVE"}
_SIZE_RE = re.compile(r"(?P<n>\d+)\s*(?P<unit>|b|k|kb|kib|m|mb|mib|g|gb|gib)", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
_MIN_PART = 5 << 20


@dataclass(frozen=True, slots=True)
class Settings:
    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None
    path_style: bool = False
    profile: str | None = None
    verify_tls: bool = True
    ca_bundle: str | None = None
    compression: str = "zstd"
    compression_level: int | None = None  # None: the codec's default
    storage_class: str | None = None
    sse: str | None = None  # AES256 | aws:kms
    sse_kms_key_id: str | None = None
    retry_budget: float = 60.0
    timeout: float = 30.0
    conditional_writes: str = "auto"  # auto | required | off
    object_tags: str = "auto"  # auto | on | off
    upload_checksum: str = "auto"  # auto | sha256 | md5 | none
    multipart_threshold: int = 64 << 20
    multipart_chunk_size: int = 16 << 20
    restore_partial: bool = False
    state_dir: str | None = None
    async_mode: bool = False  # setting name "async" (WALBUCKET_ASYNC)
    spool_dir: str | None = None  # default: <state_dir>/spool
    async_lookahead: int = 16
    async_queue_bytes: int = 512 << 20
    async_workers: int = 4
    async_idle_exit: float = 60.0
    async_wait: float = DEFAULT_ASYNC_WAIT

    @property
    def level(self) -> int:
        if self.compression_level is not None:
            return self.compression_level
        return CODECS[self.compression].default_level


_SETTING_OF_FIELD = {v: k for k, v in RENAMED.items()}


def setting_env_name(field: str) -> str:
    return ENV_PREFIX + _SETTING_OF_FIELD.get(field, field).upper()


_text = parse_text
_bool = parse_flag
_seconds = parse_seconds


def _int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("expected a whole number")
    return int(str(value).strip())


def _bounded_int(value: Any, low: int, high: int) -> int:
    number = _int(value)
    if not low <= number <= high:
        raise ValueError(f"expected a whole number from {low} to {high}")
    return number


def _size(value: Any) -> int:
    match = _SIZE_RE.fullmatch(str(value).strip())
    if match is None:
        raise ValueError("expected a size such as 67108864, 64MiB or 64M")
    return int(match["n"]) * _UNITS[match["unit"][:1].lower()]


def _choice(*options: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = _text(value)
        if text not in options:
            raise ValueError(f"expected one of {', '.join(options)}")
        return text

    return parse


def _bucket(value: Any) -> str:
    text = _text(value)
    if not _BUCKET_RE.fullmatch(text):
        raise ValueError("not a valid bucket name")
    return text


def _prefix(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a string")
    return normalize_prefix(value)


def _url(value: Any) -> str:
    text = _text(value)
    if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", text):
        raise ValueError("expected an http:// or https:// URL")
    if "@" in text.split("/")[2]:  # the URL is logged and remembered in <state_dir>: never a secret
        raise ValueError("a user or password in the URL is not allowed; credentials come from the AWS SDK's chain only")
    return text


def _storage_class(value: Any) -> str:
    text = _text(value).upper()
    if text in _UNREADABLE_CLASSES:
        raise ValueError(f"{text} objects cannot be read back without a restore request; restore_command would fail")
    return text


_PARSERS: dict[str, Callable[[Any], Any]] = {
    "bucket": _bucket,
    "prefix": _prefix,
    "endpoint_url": _url,
    "region": _text,
    "path_style": _bool,
    "profile": _text,
    "verify_tls": _bool,
    "ca_bundle": _text,
    "compression": _choice(*CODECS),
    "compression_level": _int,
    "storage_class": _storage_class,
    "sse": _choice("AES256", "aws:kms"),
    "sse_kms_key_id": _text,
    "retry_budget": _seconds,
    "timeout": _seconds,
    "conditional_writes": _choice("auto", "required", "off"),
    "object_tags": _choice("auto", "on", "off"),
    "upload_checksum": _choice("auto", "sha256", "md5", "none"),
    "multipart_threshold": _size,
    "multipart_chunk_size": _size,
    "restore_partial": _bool,
    "state_dir": _text,
    "async_mode": _bool,
    "spool_dir": _text,
    "async_lookahead": lambda v: _bounded_int(v, 0, 1024),
    "async_queue_bytes": _size,
    "async_workers": lambda v: _bounded_int(v, 1, 64),
    "async_idle_exit": _seconds,
    "async_wait": _seconds,
}


def load_settings(file_doc: Mapping[str, Any], env: Mapping[str, str], config_name: str = "config file") -> Settings:
    """Build Settings from a parsed TOML document and the environment; raise ConfigError naming the bad setting."""
    names = {_SETTING_OF_FIELD.get(f.name, f.name) for f in fields(Settings)}
    for key in file_doc:
        if key not in names:
            raise ConfigError(f"unknown setting '{key}' in {config_name}")
    for key in env:
        if key.startswith(ENV_PREFIX) and key != CONFIG_ENV and key[len(ENV_PREFIX) :].lower() not in names:
            raise ConfigError(f"unknown setting {key} in the environment")
    raw = raw_settings(file_doc, env, config_name)
    values: dict[str, Any] = {}
    for name, (value, origin) in raw.items():
        field = RENAMED.get(name, name)
        try:
            values[field] = _PARSERS[field](value)
        except ValueError as exc:
            raise ConfigError(f"invalid setting {origin}: {exc}") from None
    if "bucket" not in values:
        raise ConfigError(
            "missing setting 'bucket'",
            hint=f"set {setting_env_name('bucket')} or 'bucket' in the file named by --config or {CONFIG_ENV}",
        )
    if "region" not in values and env.get("AWS_REGION", "").strip():  # the newer AWS SDKs' name; botocore ignores it
        values["region"] = env["AWS_REGION"].strip()
    if "state_dir" not in values and default_state_dir(env.get("HOME", "")):
        values["state_dir"] = default_state_dir(env["HOME"])
    if "spool_dir" not in values and "state_dir" in values:
        values["spool_dir"] = default_spool_dir(values["state_dir"])
    settings = Settings(**values)
    _check_combinations(settings)
    return settings


def _check_combinations(s: Settings) -> None:
    level_range = CODECS[s.compression].levels
    if s.compression_level is not None and s.compression_level not in level_range:
        raise ConfigError(
            f"invalid setting 'compression_level': {s.compression} takes {level_range.start}..{level_range.stop - 1}"
        )
    if s.sse_kms_key_id is not None and s.sse != "aws:kms":
        raise ConfigError("invalid setting 'sse_kms_key_id': it needs sse = \"aws:kms\"")
    if s.multipart_chunk_size < _MIN_PART:
        raise ConfigError("invalid setting 'multipart_chunk_size': S3 parts are at least 5MiB")
    if s.multipart_threshold < s.multipart_chunk_size:
        raise ConfigError("invalid setting 'multipart_threshold': it must be at least multipart_chunk_size")
    if s.ca_bundle is not None and not s.verify_tls:
        raise ConfigError("invalid setting 'ca_bundle': it has no effect with verify_tls = false")
