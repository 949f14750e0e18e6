"""Compression codecs as a table: name -> how to compress a buffer and how to stream-decompress.

zstandard and lz4 release the GIL while they work, so parallel uploads use both cores.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO, Protocol, cast

__all__ = ["CODECS", "Codec", "Compressor", "Decompressor", "Reader", "codec"]


class Compressor(Protocol):
    """Compress a stream chunk by chunk; a chunk may be a view of a buffer that the caller reuses."""

    def compress(self, chunk: bytes | memoryview) -> bytes: ...
    def flush(self) -> bytes: ...


class Reader(Protocol):
    """A decompressed stream, read into the caller's buffer (io's readinto: 0 at the end)."""

    def readinto(self, buffer: memoryview) -> int: ...


class Decompressor(Protocol):
    def decompress(self, chunk: bytes) -> bytes: ...
    def flush(self) -> bytes: ...


class _Identity:
    def decompress(self, chunk: bytes) -> bytes:
        return chunk

    def flush(self) -> bytes:
        return b""


class _ZstdStream:
    def __init__(self) -> None:
        import zstandard

        self._obj = zstandard.ZstdDecompressor().decompressobj()

    def decompress(self, chunk: bytes) -> bytes:
        return bytes(self._obj.decompress(chunk))

    def flush(self) -> bytes:
        return b""


class _Lz4Stream:
    def __init__(self) -> None:
        import lz4.frame

        self._obj = lz4.frame.LZ4FrameDecompressor()

    def decompress(self, chunk: bytes) -> bytes:
        return bytes(self._obj.decompress(chunk))

    def flush(self) -> bytes:
        return b""


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


def _plain_compress(data: bytes, _level: int) -> bytes:
    return data


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


def _zstd_compress(data: bytes, level: int) -> bytes:
    import zstandard

    return bytes(zstandard.ZstdCompressor(level=level, write_content_size=True).compress(data))


def _lz4_compress(data: bytes, level: int) -> bytes:
    import lz4.frame

    return bytes(lz4.frame.compress(data, compression_level=level, store_size=True))


@dataclass(frozen=True, slots=True)
class Codec:
    name: str
    default_level: int
    levels: range
    compress: Callable[[bytes, int], bytes]
    decompressor: Callable[[], Decompressor]
    compressor: Callable[[int, int], Compressor]  # (level, uncompressed size) -> streaming compressor
    reader: Callable[[BinaryIO], Reader]  # compressed stream -> decompressed stream, read in bounded pieces


CODECS: dict[str, Codec] = {
    "none": Codec("none", 0, range(0, 1), _plain_compress, _Identity, _plain_compressor, _plain_reader),
    # Level 1: on real WAL it compresses as well as level 3 (x35.8 against x35.0) at less than half the CPU.
    "zstd": Codec("zstd", 1, range(-7, 23), _zstd_compress, _ZstdStream, _ZstdCompressor, _zstd_reader),
    "lz4": Codec("lz4", 0, range(0, 17), _lz4_compress, _Lz4Stream, _Lz4Compressor, _lz4_reader),
}


def codec(name: str) -> Codec | None:
    return CODECS.get(name)
