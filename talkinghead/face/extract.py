"""Motion extraction: any image or video -> Motion (blendshapes, head pose, blink, eye aspect ratio).

Videos are decoded and analysed one frame at a time with the face model in tracking mode, so
memory does not grow with length. Frames where the face is lost are filled from their
neighbours and flagged in `Motion.valid`. The eye aspect ratio follows DAWN (dawn.txt, Sec. 3.4,
blink signal) after Soukupova & Cech.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from talkinghead.errors import InputError, NoFaceError
from talkinghead.face.landmarker import FaceLandmarker, analyze_portrait
from talkinghead.face.mesh import canonical_mesh
from talkinghead.face.pose import FLIP, matrix_to_euler, similarity_fit
from talkinghead.face.regions import eye_aspect_ratio
from talkinghead.types import FaceAnalysis, Motion

log = logging.getLogger("talkinghead")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}


def face_frame(face: FaceAnalysis) -> tuple[float, np.ndarray, np.ndarray]:
    """Similarity (s px/cm, R, t) taking canonical-mesh points (image-frame axes) onto the face."""
    canon = canonical_mesh().vertices @ FLIP
    return similarity_fit(canon, face.landmarks[:468])


def motion_from_face(face: FaceAnalysis) -> Motion:
    """One-frame absolute Motion of a detected face."""
    s, _, _ = face_frame(face)
    return Motion(
        blendshapes=face.blendshapes[None],
        rotation=matrix_to_euler(face.matrix[:3, :3])[None],
        translation=face.matrix[:3, 3][None],
        scale=np.array([s / face.image_size[1]]),
        ear=eye_aspect_ratio(face.landmarks)[None],
    )


def fill_missing(rows: list[Motion | None], fps: float, name: str) -> Motion:
    valid = np.array([r is not None for r in rows])
    if not valid.any():
        raise NoFaceError(f"{name}: no face found in any frame")
    template = next(r for r in rows if r is not None)
    filled = [r if r is not None else template for r in rows]
    m = Motion.concatenate(filled)
    m.fps = fps
    m.valid = valid
    if not valid.all():
        idx = np.arange(len(rows))
        for attr in ("blendshapes", "rotation", "translation", "scale", "ear"):
            a = getattr(m, attr).reshape(len(rows), -1)
            for j in range(a.shape[1]):
                a[~valid, j] = np.interp(idx[~valid], idx[valid], a[valid, j])
        log.warning("%s: face lost in %d of %d frames; filled from neighbours", name,
                    int((~valid).sum()), len(rows))
    return m


def extract_video_motion(path: str | Path, progress: bool = True,
                         on_frame: Callable[[np.ndarray, FaceAnalysis | None], None] | None = None
                         ) -> Motion:
    """Motion of the largest face in every frame of a video.

    `on_frame`, when given, also sees each frame and its face (None where none was found), for
    measurements beyond Motion in the same pass.
    """
    from tqdm import tqdm

    from talkinghead.io.video import iter_frames, video_info

    info = video_info(path)
    rows: list[Motion | None] = []
    with FaceLandmarker(video=True) as lm:
        frames = tqdm(iter_frames(path), total=info.num_frames or None, desc="analysing video",
                      disable=None if progress else True, unit="frame", leave=False)
        for i, frame in enumerate(frames):
            faces = lm.detect(frame, timestamp_ms=int(round(i * 1000.0 / info.fps)))
            rows.append(motion_from_face(faces[0]) if faces else None)
            if on_frame is not None:
                on_frame(frame, faces[0] if faces else None)
    if not rows:
        raise InputError(f"{path}: video has no frames")
    return fill_missing(rows, info.fps, str(path))


def extract_motion(path: str | Path, progress: bool = True) -> Motion:
    """Motion from an image (one frame) or a video file."""
    path = Path(path)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        from talkinghead.io.image import read_image

        return motion_from_face(analyze_portrait(read_image(path), str(path)))
    return extract_video_motion(path, progress=progress)
