"""Every codec round-trips as push and get use it (chunked compressor, stream reader), at every level it accepts."""

from __future__ import annotations

import io
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from walbucket.core.codecs import CODECS, Codec

NAMES = sorted(CODECS)
WAL_LIKE = (b"\x10\xd1\x02\x00" + bytes(range(256)) * 3 + b"\0" * 4000) * 64 + os.urandom(1 << 12)


def decompress_streaming(c: Codec, blob: bytes, chunk: int) -> bytes:
    """Read the decompressed stream into a buffer of ``chunk`` bytes, as get does."""
    reader = c.reader(io.BytesIO(blob))
    buffer = memoryview(bytearray(chunk))
    out = []
    while n := reader.readinto(buffer):
        out.append(bytes(buffer[:n]))
    return b"".join(out)


def compress_streaming(c: Codec, data: bytes, level: int, chunk: int) -> bytes:
    stream = c.compressor(level, len(data))
    out = [stream.compress(data[i : i + chunk]) for i in range(0, len(data), chunk)]
    out.append(stream.flush())
    return b"".join(out)


def test_codec_table() -> None:
    assert NAMES == ["lz4", "none", "zstd"]
    assert {name: (c.name, c.default_level) for name, c in CODECS.items()} == {
        "none": ("none", 0),
        "zstd": ("zstd", 1),
        "lz4": ("lz4", 0),
    }


@pytest.mark.parametrize("name", NAMES)
def test_default_level_is_one_of_the_codecs_levels(name: str) -> None:
    assert CODECS[name].default_level in CODECS[name].levels


@pytest.mark.parametrize(("chunk", "read"), [(1000, 7), (65536, 65536), (1 << 20, 1), (1 << 20, 1 << 20)])
@pytest.mark.parametrize("name", NAMES)
def test_streaming_compress_then_streaming_decompress(name: str, chunk: int, read: int) -> None:
    c = CODECS[name]
    data = WAL_LIKE if read > 1 else WAL_LIKE[:20000]
    blob = compress_streaming(c, data, c.default_level, chunk)
    assert decompress_streaming(c, blob, read) == data


@pytest.mark.parametrize("name", ["zstd", "lz4"])
def test_compressors_shrink_wal_like_data(name: str) -> None:
    c = CODECS[name]
    assert len(compress_streaming(c, WAL_LIKE, c.default_level, 1 << 16)) < len(WAL_LIKE) // 2


def test_none_stores_the_bytes_as_they_are() -> None:
    c = CODECS["none"]
    assert compress_streaming(c, WAL_LIKE, 0, 999) == WAL_LIKE


@pytest.mark.parametrize(
    ("name", "level"),
    [(name, level) for name in NAMES for level in sorted({*CODECS[name].levels[:2], *CODECS[name].levels[-2:]})],
)
def test_round_trip_at_the_ends_of_the_level_range(name: str, level: int) -> None:
    c = CODECS[name]
    data = WAL_LIKE[:100_000]
    assert decompress_streaming(c, compress_streaming(c, data, level, 30_000), 8192) == data


@pytest.mark.parametrize("name", NAMES)
def test_empty_input_round_trips(name: str) -> None:
    c = CODECS[name]
    assert decompress_streaming(c, compress_streaming(c, b"", c.default_level, 10) or b"", 10) == b""


@pytest.mark.parametrize("name", ["zstd", "lz4"])
def test_garbage_does_not_decompress(name: str) -> None:
    with pytest.raises(Exception):  # noqa: B017 - each library raises its own error type
        decompress_streaming(CODECS[name], b"this is not a compressed frame" * 10, 64)


@settings(max_examples=50, deadline=None)
@given(name=st.sampled_from(NAMES), data=st.binary(max_size=5000), chunk=st.integers(1, 2000))
def test_any_bytes_round_trip(name: str, data: bytes, chunk: int) -> None:
    c = CODECS[name]
    assert decompress_streaming(c, compress_streaming(c, data, c.default_level, chunk), chunk) == data
