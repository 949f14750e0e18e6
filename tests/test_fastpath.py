"""The fast path's reading of the settings (cli/scan.py), checked against tomllib and the full command's."""

from __future__ import annotations

import string
import sys
from pathlib import Path

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from walbucket.cli.scan import fast_settings, load, scan_flat_toml
from walbucket.core.fingerprint import settings_fingerprint
from walbucket.spooler.spool import Spool

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", {}),
        ("# only a comment\n\n", {}),
        ('async = true\nspool_dir = "/var/spool/wb"  # a comment\n', {"async": True, "spool_dir": "/var/spool/wb"}),
        ("state_dir = '/srv/a b'\nasync_wait = 30.5\n", {"state_dir": "/srv/a b", "async_wait": "30.5"}),
        ('bucket = "a#b" # the hash is in the string\r\nasync = false', {"bucket": "a#b", "async": False}),
        ("async_lookahead = 1_000", {"async_lookahead": "1_000"}),
    ],
)
def test_a_flat_file_is_read_as_tomllib_reads_it(text: str, expected: dict[str, object]) -> None:
    assert scan_flat_toml(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "[table]\nasync = true",  # a table: settings files have none, but the fast path cannot tell what it means
        'spool_dir = "C:\\\\spool"',  # an escape
        'a = """x"""',  # a multi-line string
        "a = [1, 2]",
        "a = {b = 1}",
        "a.b = 1",  # a dotted key
        '"a" = 1',  # a quoted key
        "a = 1\na = 2",  # a repeated key: tomllib refuses it
        "a = on",  # not TOML
        'a = "x" "y"',
        "a =",
        "= 1",
        'a = "unterminated',
        "a = 0x10",
        "a = +",
        "a = 1__0",
        "a = 1.",
        "a = .5",
        "a = 01",
        "a = 1e3",
        "async = true # x\u2028spool_dir = '/elsewhere'",  # str.splitlines splits there, TOML does not
        "async = true\rspool_dir = '/elsewhere'",  # a lone carriage return: not TOML
        "async = true\x0bspool_dir = '/elsewhere'",
        "a = 1 # \x7f",
    ],
)
def test_anything_else_is_left_to_the_full_command(text: str) -> None:
    assert scan_flat_toml(text) is None


_KEYS = st.text(string.ascii_lowercase + "_", min_size=1, max_size=12)
_VALUES = st.one_of(
    st.booleans(),
    st.integers(-(10**9), 10**9),
    # a fixed alphabet: st.characters(...) builds Unicode tables on first use, over a second on a fresh machine
    st.text(st.sampled_from(list(string.ascii_letters + string.digits + " \t/._-#=[]{},:é€😀")), max_size=20),
)
_SPACE = st.sampled_from(["", " ", "\t", "  "])
_COMMENT = st.sampled_from(["", "# note", "#", "# = 'x' \" [t]"])


@st.composite
def _documents(draw: st.DrawFn) -> tuple[str, dict[str, object]]:
    values = draw(st.dictionaries(_KEYS, _VALUES, max_size=8))
    lines = []
    for key, value in values.items():
        if isinstance(value, bool):
            literal = "true" if value else "false"
        elif isinstance(value, int):
            literal = str(value)
        else:
            literal = draw(st.sampled_from(['"{}"', "'{}'"])).format(value)
        comment = draw(_COMMENT)
        lines.append(f"{draw(_SPACE)}{key}{draw(_SPACE)}={draw(_SPACE)}{literal}{draw(_SPACE)}{comment}")
        if draw(st.booleans()):
            lines.append(draw(_COMMENT))
    return "\n".join(lines), values


@given(_documents())
def test_every_flat_document_reads_as_tomllib_reads_it(document: tuple[str, dict[str, object]]) -> None:
    text, values = document
    parsed = tomllib.loads(text)
    assert parsed == values
    scanned = scan_flat_toml(text)
    assert scanned is not None
    assert scanned == {k: str(v) if isinstance(v, int) and not isinstance(v, bool) else v for k, v in parsed.items()}


_TRICKY = list("ab_=#\"' \t\n\r[].,{}\\0123456789tfrue+-\x7f\u2028")


@st.composite
def _mutated_documents(draw: st.DrawFn) -> str:
    """A flat document with up to three characters inserted, deleted or replaced: mostly near-misses of TOML."""
    text, _ = draw(_documents())
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(text)))
        kind = draw(st.sampled_from(["insert", "delete", "replace"]))
        char = draw(st.sampled_from(_TRICKY))
        if kind == "insert":
            text = text[:at] + char + text[at:]
        elif kind == "delete":
            text = text[:at] + text[at + 1 :]
        else:
            text = text[:at] + char + text[at + 1 :]
    return text


@settings(max_examples=500)
@given(_mutated_documents())
def test_whatever_the_scanner_accepts_tomllib_reads_the_same(text: str) -> None:
    scanned = scan_flat_toml(text)
    event("accepted" if scanned else "empty" if scanned == {} else "left to the full command")
    if scanned is None:
        return
    parsed = tomllib.loads(text)  # raises if the scanner accepted something that is not TOML
    assert set(parsed) == set(scanned)
    for key, value in parsed.items():
        if isinstance(value, (bool, str)):
            assert scanned[key] == value
        else:
            assert float(str(scanned[key]).replace("_", "")) == float(value)


def test_the_near_misses_exercise_both_answers() -> None:
    """The property above means something only if many near-misses are accepted and many are refused."""
    answers = {"accepted": 0, "refused": 0}

    @settings(max_examples=200, database=None)
    @given(_mutated_documents())
    def count(text: str) -> None:
        scanned = scan_flat_toml(text)
        if scanned is None:
            answers["refused"] += 1
        elif scanned:
            answers["accepted"] += 1

    count()
    assert answers["accepted"] >= 50 and answers["refused"] >= 20, answers


@pytest.mark.parametrize(
    ("env", "file_text"),
    [
        ({"WALBUCKET_ASYNC": "on"}, None),  # Debian's pg_ctlcluster: no HOME, the password database has it
        ({"WALBUCKET_ASYNC": "on", "HOME": "/srv/elsewhere"}, None),
        ({"WALBUCKET_ASYNC": "on", "WALBUCKET_STATE_DIR": "/var/lib/wb"}, None),
        ({}, "async = true\nspool_dir = '/var/spool/wb'\n"),
        ({"WALBUCKET_SPOOL_DIR": "/from/env"}, "async = 'on'\nspool_dir = '/from/file'\n"),
    ],
    ids=["no-home", "home", "state-dir", "file", "env-over-file"],
)
def test_the_fast_path_finds_the_spool_the_full_command_uses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], file_text: str | None
) -> None:
    data_dir = tmp_path / "pgdata"
    data_dir.mkdir()
    monkeypatch.chdir(data_dir)
    env = {"WALBUCKET_BUCKET": "wal-archive", **env}
    if file_text is not None:
        config = tmp_path / "walbucket.toml"
        config.write_text(file_text)
        env["WALBUCKET_CONFIG"] = str(config)
    settings, fingerprint = load(None, env)
    assert settings.async_mode and settings.spool_dir is not None
    found = fast_settings(env)
    assert found is not None
    spool_dir, wait, config = found
    assert settings_fingerprint(env, env.get("WALBUCKET_CONFIG"), config) == fingerprint
    assert wait == settings.async_wait
    spool = Spool.for_data_dir(Path(settings.spool_dir), data_dir, fingerprint)
    assert Spool.for_data_dir(Path(spool_dir), data_dir, fingerprint).root == spool.root


@pytest.mark.parametrize(
    ("text", "shown"),
    [("a\nb", "a\\x0ab"), ("\x1b[2J", "\\x1b[2J"), ("\x9b2J", "\\x9b2J"), ("a\u2028b", "a\\u2028b"), ("ok", "ok")],
)
def test_every_control_character_is_escaped_in_what_walbucket_writes(text: str, shown: str) -> None:
    from walbucket.cli.lines import printable

    assert printable(text) == shown
