"""A reader for the IDX format of the MNIST files, gzip-compressed or not.

Layout: two zero bytes, a type byte, a byte giving the number of dimensions n, n big-endian uint32
sizes, then the values in big-endian C order.
"""
from __future__ import annotations

import gzip
import os
import pathlib

import numpy as np

_GZIP_MAGIC = b"\x1f\x8b"
_IDX_TYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decode the bytes of one (uncompressed) IDX file; `source` names it in error messages."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{source}: not an IDX file (magic number must start with two zero bytes, got {data[:4]!r})")
    type_code, ndim = data[2], data[3]
    if type_code not in _IDX_TYPES:
        valid = ", ".join(f"0x{code:02X}" for code in _IDX_TYPES)
        raise ValueError(f"{source}: unknown IDX type byte 0x{type_code:02X}; valid: {valid}")
    header_end = 4 + 4 * ndim
    if len(data) < header_end:
        raise ValueError(f"{source}: truncated IDX header ({len(data)} bytes, need {header_end} for {ndim} dims)")
    shape = tuple(int(size) for size in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_TYPES[type_code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) - header_end != expected:
        raise ValueError(
            f"{source}: IDX header says shape {shape} of {dtype} ({expected} bytes of data), "
            f"but the file holds {len(data) - header_end}"
        )
    values = np.frombuffer(data, dtype=dtype, offset=header_end).reshape(shape)
    return values.astype(dtype.newbyteorder("="))


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file into a native-endian array; gzip compression is detected from the content."""
    path = pathlib.Path(path)
    raw = path.read_bytes()
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as error:
            raise ValueError(f"{path}: corrupt gzip data ({error})") from error
    return parse_idx(raw, str(path))

