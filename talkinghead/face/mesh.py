"""The canonical face mesh (468 vertices, 898 triangles), read from the face model's own files.

The FaceLandmarker .task bundle holds `geometry_pipeline_metadata_landmarks.binarypb`, a protobuf
whose field 1 is the canonical mesh: field 3 the vertex buffer (x, y, z, u, v per vertex, cm,
y up, z toward the viewer), field 4 the triangle indices. Its 468 vertices are the first 468
landmarks, so a detected face *is* this mesh fitted to the image.
"""

from __future__ import annotations

import functools
import struct
import zipfile
from dataclasses import dataclass

import numpy as np


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return result, i


def _fields(buf: bytes) -> list[tuple[int, object]]:
    """Decode one protobuf message into (field number, value) pairs (wire types 0, 1, 2, 5)."""
    out, i = [], 0
    while i < len(buf):
        key, i = _varint(buf, i)
        num, wire = key >> 3, key & 7
        if wire == 0:
            val, i = _varint(buf, i)
        elif wire == 2:
            n, i = _varint(buf, i)
            val, i = buf[i:i + n], i + n
        elif wire == 5:
            val, i = buf[i:i + 4], i + 4
        elif wire == 1:
            val, i = buf[i:i + 8], i + 8
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        out.append((num, val))
    return out


def _packed_or_repeated(values: list[object]) -> list[int]:
    ints: list[int] = []
    for v in values:
        if isinstance(v, bytes):  # packed varints
            i = 0
            while i < len(v):
                x, i = _varint(v, i)
                ints.append(x)
        else:
            ints.append(int(v))
    return ints


@dataclass(frozen=True)
class CanonicalMesh:
    vertices: np.ndarray  # (468, 3) cm; x toward image right, y up, z toward the viewer
    uv: np.ndarray        # (468, 2)
    triangles: np.ndarray  # (898, 3) int


def parse_geometry_metadata(buf: bytes) -> CanonicalMesh:
    mesh = next(v for n, v in _fields(buf) if n == 1)
    mf = _fields(mesh)
    vb = [v for n, v in mf if n == 3]
    if len(vb) == 1 and len(vb[0]) > 4:  # packed floats
        floats = np.frombuffer(vb[0], "<f4")
    else:
        floats = np.array([struct.unpack("<f", v)[0] for v in vb], np.float32)
    floats = floats.reshape(-1, 5)
    tri = np.array(_packed_or_repeated([v for n, v in mf if n == 4]), np.int32).reshape(-1, 3)
    return CanonicalMesh(floats[:, :3].astype(np.float32), floats[:, 3:].astype(np.float32), tri)


@functools.lru_cache(maxsize=1)
def canonical_mesh() -> CanonicalMesh:
    from talkinghead.assets import asset_path

    with zipfile.ZipFile(asset_path("face_landmarker.task")) as z:
        return parse_geometry_metadata(z.read("geometry_pipeline_metadata_landmarks.binarypb"))
