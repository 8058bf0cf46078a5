"""Face analysis over MediaPipe FaceLandmarker: 478 landmarks, 52 blendshapes, head pose matrix.

One module owns the face model. It finds faces on photos and stylized portraits (a padded,
downscaled second look when the first finds nothing), picks the largest face when there are
several, and turns "no face" / "face too small" into one-line errors that name the file.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from talkinghead.errors import NoFaceError
from talkinghead.types import FaceAnalysis

log = logging.getLogger("talkinghead")
MIN_FACE_PX = 64


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """MediaPipe's C++ side logs to fd 2 when a graph starts; keep the user's terminal clean."""
    try:
        fd = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(fd, 2)
        os.close(fd)


# mediapipe's package __init__s import every task: its audio tasks pull in sounddevice and its
# drawing utilities matplotlib.pyplot (0.41 of 0.48 CPU s for the whole import; the landmarker
# uses neither). Those modules are created lazily (importlib.util.LazyLoader): they load, in
# full, on the first attribute anyone reads from them, so mediapipe keeps working as shipped.
_MP_LAZY = frozenset({"mediapipe.tasks.python.audio", "mediapipe.tasks.python.text",
                      "mediapipe.tasks.python.vision.drawing_utils",
                      "mediapipe.tasks.python.vision.drawing_styles"})


class _LazyFinder(importlib.abc.MetaPathFinder):
    """Finds the modules of `names` on the normal path and hands them out lazily."""

    def __init__(self, names: frozenset[str]) -> None:
        self.names = names

    def find_spec(self, name, path, target=None):
        if name not in self.names:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return None
        spec.loader = importlib.util.LazyLoader(spec.loader)
        return spec


def _import_mediapipe_vision():
    """`(BaseOptions, vision)` of mediapipe.tasks.python, without the modules of _MP_LAZY."""
    if "mediapipe" not in sys.modules:
        finder = _LazyFinder(_MP_LAZY)
        sys.meta_path.insert(0, finder)
        try:
            import mediapipe  # noqa: F401
        finally:
            sys.meta_path.remove(finder)
    from mediapipe.tasks.python import BaseOptions, vision

    return BaseOptions, vision


class FaceLandmarker:
    """Wrapper over the MediaPipe task. `video=True` tracks across frames (timestamps required)."""

    def __init__(self, video: bool = False, max_faces: int = 4, min_confidence: float = 0.5) -> None:
        os.environ.setdefault("GLOG_minloglevel", "2")
        from talkinghead.assets import asset_path

        BaseOptions, vision = _import_mediapipe_vision()

        mode = vision.RunningMode.VIDEO if video else vision.RunningMode.IMAGE
        options = vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(asset_path("face_landmarker.task"))),
            running_mode=mode, num_faces=max_faces,
            min_face_detection_confidence=min_confidence, min_face_presence_confidence=min_confidence,
            min_tracking_confidence=min_confidence,
            output_face_blendshapes=True, output_facial_transformation_matrixes=True)
        with _quiet_stderr():
            self._task = vision.FaceLandmarker.create_from_options(options)
        self.video = video

    def close(self) -> None:
        if self._task is not None:
            with _quiet_stderr():
                self._task.close()
            self._task = None

    def __enter__(self) -> FaceLandmarker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # MediaPipe's own __del__ fails at interpreter exit
        with contextlib.suppress(Exception):
            self.close()

    def detect(self, image: np.ndarray, timestamp_ms: int | None = None) -> list[FaceAnalysis]:
        """All faces in an (H, W, 3) uint8 RGB image, largest first."""
        import mediapipe as mp

        h, w = image.shape[:2]
        mp_image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image))
        if self.video:
            result = self._task.detect_for_video(mp_image, int(timestamp_ms or 0))
        else:
            result = self._task.detect(mp_image)
        faces = []
        n = len(result.face_landmarks)
        for i in range(n):
            lm = np.array([(p.x * w, p.y * h, p.z * w) for p in result.face_landmarks[i]], np.float32)
            bs = np.array([c.score for c in result.face_blendshapes[i]], np.float32)
            mat = np.array(result.facial_transformation_matrixes[i], np.float32).reshape(4, 4)
            faces.append(FaceAnalysis(lm, bs, mat, (h, w), n))
        faces.sort(key=lambda f: f.size, reverse=True)
        return faces

    def _detect_view(self, image: np.ndarray, box: tuple[int, int, int, int],
                     side: int) -> list[FaceAnalysis]:
        """Detect in the square view `box` (x0, y0 may be negative: grey padding), scaled to
        `side` px; landmarks come back in the full image's pixels."""
        import cv2

        h, w = image.shape[:2]
        x0, y0, size = box[0], box[1], box[2] - box[0]
        view = np.full((size, size, 3), 127, np.uint8)
        sx0, sy0 = max(0, x0), max(0, y0)
        sx1, sy1 = min(w, x0 + size), min(h, y0 + size)
        view[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = image[sy0:sy1, sx0:sx1]
        k = min(1.0, side / size)
        if k < 1.0:
            view = cv2.resize(view, (round(size * k), round(size * k)), interpolation=cv2.INTER_AREA)
        out = []
        for f in self.detect(view):
            lm = f.landmarks / k
            lm[:, 0] += x0
            lm[:, 1] += y0
            out.append(FaceAnalysis(lm, f.blendshapes, f.matrix, (h, w), 1))
        return out

    def detect_robust(self, image: np.ndarray) -> list[FaceAnalysis]:
        """All faces, looking harder than `detect`: the whole image, a padded square of it, and
        overlapping square tiles along its long side. The short-range detector works on a small
        square input and misses faces in wide, tall or large images, paintings and drawings."""
        h, w = image.shape[:2]
        found = self.detect(image)
        side = max(h, w)
        views = [((w - side) // 2, (h - side) // 2, (w - side) // 2 + side)]
        short = min(h, w)
        if side > 1.2 * short:  # tiles of the short side's size, half-overlapping
            n = int(np.ceil(2 * side / short)) - 1
            for i in range(n):
                off = round(i * (side - short) / max(n - 1, 1))
                views.append((off, 0, off + short) if w > h else (0, off, short))
        for box in views:
            for f in self._detect_view(image, box, 1024):
                if all(_iou(f.bbox, g.bbox) < 0.3 for g in found):
                    found.append(f)
        for f in found:
            f.num_faces = len(found)
        found.sort(key=lambda f: f.size, reverse=True)
        return found


class CachedLandmarker(FaceLandmarker):
    """An IMAGE-mode FaceLandmarker whose detections are kept on disk, keyed by the image's
    pixels, the face model file and the options (sha256): a portrait seen before is analysed
    (and the renderer calibrated on it) without loading MediaPipe at all. The face model loads
    on the first image not in the cache. `TALKINGHEAD_FACE_CACHE`: the folder (default
    <cache dir>/faces), or "off"."""

    VERSION = b"faces-1"

    def __init__(self, max_faces: int = 4, min_confidence: float = 0.5) -> None:
        from talkinghead.assets import asset_path, cache_dir

        self._task, self.video = None, False
        self._options = (max_faces, min_confidence)
        where = os.environ.get("TALKINGHEAD_FACE_CACHE", "")
        self.directory = None if where.lower() == "off" else Path(where or cache_dir() / "faces")
        self._model = None
        self._asset = asset_path("face_landmarker.task")

    def _key(self, image: np.ndarray) -> str:
        import hashlib

        if self._model is None:
            self._model = hashlib.sha256(self._asset.read_bytes()).digest()
        h = hashlib.sha256(self.VERSION + self._model + repr((self._options, image.shape, str(image.dtype))).encode())
        h.update(np.ascontiguousarray(image).data)
        return h.hexdigest()

    def detect(self, image: np.ndarray, timestamp_ms: int | None = None) -> list[FaceAnalysis]:
        if self.directory is None:
            return self._detect(image)
        path = self.directory / f"{self._key(image)}.npz"
        try:
            with np.load(path) as z:
                return [FaceAnalysis(z["landmarks"][i], z["blendshapes"][i], z["matrices"][i],
                                     tuple(int(v) for v in z["size"]), int(z["num_faces"]))
                        for i in range(len(z["landmarks"]))]
        except (OSError, KeyError, ValueError):
            pass  # not cached yet, or unreadable: detect (again)
        faces = self._detect(image)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
            np.savez(tmp, landmarks=np.array([f.landmarks for f in faces], np.float32).reshape(-1, 478, 3),
                     blendshapes=np.array([f.blendshapes for f in faces], np.float32).reshape(len(faces), 52),
                     matrices=np.array([f.matrix for f in faces], np.float32).reshape(-1, 4, 4),
                     size=np.array(image.shape[:2]), num_faces=len(faces))
            tmp.replace(path)
        except OSError:
            pass  # a cache that cannot be written only costs time
        return faces

    def _detect(self, image: np.ndarray) -> list[FaceAnalysis]:
        if self._task is None:
            FaceLandmarker.__init__(self, False, *self._options)
        return FaceLandmarker.detect(self, image)


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def analyze_portrait(image: np.ndarray, name: str, landmarker: FaceLandmarker | None = None,
                     min_face: int = MIN_FACE_PX) -> FaceAnalysis:
    """The one face to animate in a portrait: the largest, with clear errors when there is none."""
    own = landmarker is None
    landmarker = landmarker or FaceLandmarker()
    try:
        faces = landmarker.detect_robust(image)
    finally:
        if own:
            landmarker.close()
    if not faces:
        raise NoFaceError(f"{name}: no face found in the image")
    if len(faces) > 1:
        log.warning("%s: %d faces found; animating the largest (%.0f px)", name, len(faces),
                    faces[0].size)
    face = faces[0]
    if face.size < min_face:
        raise NoFaceError(f"{name}: the face is {face.size:.0f} px, too small to animate "
                          f"(needs at least {min_face} px; use a larger image)")
    return face
