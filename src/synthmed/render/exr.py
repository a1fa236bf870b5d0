"""A minimal reader for the uncompressed, single-part, scanline OpenEXR files our compositor writes.

bpy's image API exposes one pass per file and bpy ships no OpenImageIO module, so we read the few
channels (colour, albedo, diffuse light, object index, depth, normals) straight from the file: no extra render,
no extra dependency.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

_PIXEL = {0: np.dtype("<u4"), 1: np.dtype("<f2"), 2: np.dtype("<f4")}


def read_exr(path: str | Path) -> dict[str, np.ndarray]:
    """{channel name: HxW float32 array}, row 0 at the top. Only NO_COMPRESSION scanline files."""
    data = Path(path).read_bytes()
    if data[:4] != b"\x76\x2f\x31\x01":
        raise ValueError(f"{path}: not an OpenEXR file")
    if struct.unpack_from("<I", data, 4)[0] & 0x1A00:  # tiled / deep / multi-part bits
        raise ValueError(f"{path}: only single-part scanline EXR is supported")
    pos, header = 8, {}
    while data[pos] != 0:
        end = data.index(b"\0", pos)
        name = data[pos:end].decode()
        end2 = data.index(b"\0", end + 1)
        size = struct.unpack_from("<i", data, end2 + 1)[0]
        header[name] = data[end2 + 5:end2 + 5 + size]
        pos = end2 + 5 + size
    pos += 1
    if header["compression"][0] != 0:
        raise ValueError(f"{path}: compressed EXR (codec {header['compression'][0]}) is not supported")
    channels, raw, p = [], header["channels"], 0
    while raw[p] != 0:
        end = raw.index(b"\0", p)
        channels.append((raw[p:end].decode(), _PIXEL[struct.unpack_from("<i", raw, end + 1)[0]]))
        p = end + 17
    x0, y0, x1, y1 = struct.unpack("<4i", header["dataWindow"])
    width, height = x1 - x0 + 1, y1 - y0 + 1
    offsets = np.frombuffer(data, "<u8", count=height, offset=pos)
    row_dtype = np.dtype([(name, dt, (width,)) for name, dt in channels])
    rows = np.empty(height, row_dtype)
    for off in offsets:
        y = struct.unpack_from("<i", data, int(off))[0] - y0
        rows[y] = np.frombuffer(data, row_dtype, count=1, offset=int(off) + 8)[0]
    return {name: rows[name].astype(np.float32) for name, _ in channels}
