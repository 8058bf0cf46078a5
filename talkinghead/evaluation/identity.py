"""Identity similarity with dlib's ResNet 128-d face embedding (offline stand-in for ArcFace CSIM;
same person: distance < 0.6). Faces are located with our face model, so dlib's own detector is
not needed; its 5-point shape predictor aligns the chip."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from talkinghead.errors import TalkingHeadError
from talkinghead.types import FaceAnalysis


def _model_file(name: str) -> str:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise TalkingHeadError("dlib face models missing: pip install face-recognition-models==0.3.0")
    return str(Path(list(spec.submodule_search_locations)[0]) / "models" / name)


class DlibIdentity:
    def __init__(self) -> None:
        import dlib

        self._dlib = dlib
        self.shape = dlib.shape_predictor(_model_file("shape_predictor_5_face_landmarks.dat"))
        self.net = dlib.face_recognition_model_v1(
            _model_file("dlib_face_recognition_resnet_model_v1.dat"))

    def embed(self, image: np.ndarray, face: FaceAnalysis) -> np.ndarray:
        """(128,) embedding of `face` in an (H, W, 3) uint8 RGB image."""
        x0, y0, x1, y1 = face.bbox
        rect = self._dlib.rectangle(int(x0), int(y0), int(x1), int(y1))
        shape = self.shape(image, rect)
        return np.asarray(self.net.compute_face_descriptor(image, shape), np.float32)

    @staticmethod
    def distance(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.linalg.norm(a - b))
