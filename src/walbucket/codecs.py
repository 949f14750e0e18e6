"""Compression codecs as a table: name -> how to compress a buffer and how to stream-decompress.

zstandard and lz4 release the GIL while they work, so parallel uploads use both cores.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO, Protocol

__all__ = ["CODECS", "Codec", "Compressor", "Decompressor", "codec"]


class Compressor(Protocol):
    def compress(self, chunk: bytes) -> bytes: ...
    def flush(self) -> bytes: ...


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
    def compress(self, chunk: bytes) -> bytes:
        return chunk

    def flush(self) -> bytes:
        return b""


class _ZstdCompressor:
    def __init__(self, level: int, size: int) -> None:
        import zstandard

        self._obj = zstandard.ZstdCompressor(level=level, write_content_size=True).compressobj(size=size)

    def compress(self, chunk: bytes) -> bytes:
        return bytes(self._obj.compress(chunk))

    def flush(self) -> bytes:
        return bytes(self._obj.flush())


class _Lz4Compressor:
    def __init__(self, level: int, size: int) -> None:
        import lz4.frame

        self._obj = lz4.frame.LZ4FrameCompressor(compression_level=level)
        self._begin: bytes | None = bytes(self._obj.begin(source_size=size))

    def compress(self, chunk: bytes) -> bytes:
        out = bytes(self._obj.compress(chunk))
        if self._begin is not None:
            out, self._begin = self._begin + out, None
        return out

    def flush(self) -> bytes:
        out = (self._begin or b"") + bytes(self._obj.flush())
        self._begin = None
        return out


def _zstd_reader(source: BinaryIO) -> BinaryIO:
    import zstandard

    reader: BinaryIO = zstandard.ZstdDecompressor().stream_reader(source, read_across_frames=True)
    return reader


def _lz4_reader(source: BinaryIO) -> BinaryIO:
    import lz4.frame

    reader: BinaryIO = lz4.frame.LZ4FrameFile(source, mode="rb")
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
    reader: Callable[[BinaryIO], BinaryIO]  # compressed stream -> decompressed stream, read in bounded pieces


CODECS: dict[str, Codec] = {
    "none": Codec(
        "none", 0, range(0, 1), lambda data, _level: data, _Identity, lambda _l, _s: _IdentityCompressor(), lambda f: f
    ),
    # Level 1: on real WAL it compresses as well as level 3 (x35.8 against x35.0) at less than half the CPU.
    "zstd": Codec("zstd", 1, range(-7, 23), _zstd_compress, _ZstdStream, _ZstdCompressor, _zstd_reader),
    "lz4": Codec("lz4", 0, range(0, 17), _lz4_compress, _Lz4Stream, _Lz4Compressor, _lz4_reader),
}


def codec(name: str) -> Codec | None:
    return CODECS.get(name)
