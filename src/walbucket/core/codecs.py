"""Compression codecs as a table: name -> how push compresses a file in chunks and how get stream-decompresses it.

zstandard and lz4 release the GIL while they work, so parallel uploads use both cores.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO, Protocol, cast

__all__ = ["CODECS", "Codec", "Compressor", "Reader"]


class Compressor(Protocol):
    """Compress a stream chunk by chunk; a chunk may be a view of a buffer that the caller reuses."""

    def compress(self, chunk: bytes | memoryview) -> bytes: ...
    def flush(self) -> bytes: ...


class Reader(Protocol):
    """A decompressed stream, read into the caller's buffer (io's readinto: 0 at the end)."""

    def readinto(self, buffer: memoryview) -> int: ...


class _IdentityCompressor:
    def compress(self, chunk: bytes | memoryview) -> bytes:
        return bytes(chunk)  # a copy: the caller reuses its buffer

    def flush(self) -> bytes:
        return b""


class _ZstdCompressor:
    def __init__(self, level: int, size: int) -> None:
        import zstandard

        self._obj = zstandard.ZstdCompressor(level=level, write_content_size=True).compressobj(size=size)

    def compress(self, chunk: bytes | memoryview) -> bytes:
        return bytes(self._obj.compress(chunk))

    def flush(self) -> bytes:
        return bytes(self._obj.flush())


class _Lz4Compressor:
    def __init__(self, level: int, size: int) -> None:
        import lz4.frame

        self._obj = lz4.frame.LZ4FrameCompressor(compression_level=level)
        self._begin: bytes | None = bytes(self._obj.begin(source_size=size))

    def compress(self, chunk: bytes | memoryview) -> bytes:
        out = bytes(self._obj.compress(chunk))
        if self._begin is not None:
            out, self._begin = self._begin + out, None
        return out

    def flush(self) -> bytes:
        out = (self._begin or b"") + bytes(self._obj.flush())
        self._begin = None
        return out


def _plain_compressor(_level: int, _size: int) -> Compressor:
    return _IdentityCompressor()


def _plain_reader(source: BinaryIO) -> Reader:
    return cast(Reader, source)  # binary files and io.BytesIO have readinto; typing.BinaryIO does not say so


def _zstd_reader(source: BinaryIO) -> Reader:
    import zstandard

    reader: Reader = zstandard.ZstdDecompressor().stream_reader(source, read_across_frames=True)
    return reader


def _lz4_reader(source: BinaryIO) -> Reader:
    import lz4.frame

    reader: Reader = lz4.frame.LZ4FrameFile(source, mode="rb")
    return reader


@dataclass(frozen=True, slots=True)
class Codec:
    name: str
    default_level: int
    levels: range
    compressor: Callable[[int, int], Compressor]  # (level, uncompressed size) -> streaming compressor
    reader: Callable[[BinaryIO], Reader]  # compressed stream -> decompressed stream, read in bounded pieces


CODECS: dict[str, Codec] = {
    "none": Codec("none", 0, range(0, 1), _plain_compressor, _plain_reader),
    # Level 1: on real WAL it compresses as well as level 3 (x35.8 against x35.0) at less than half the CPU.
    "zstd": Codec("zstd", 1, range(-7, 23), _ZstdCompressor, _zstd_reader),
    "lz4": Codec("lz4", 0, range(0, 17), _Lz4Compressor, _lz4_reader),
}
