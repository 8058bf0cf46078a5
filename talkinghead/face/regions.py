"""Named landmark groups of the 478-point MediaPipe face mesh ("right" = the subject's right,
which is on the image's left). Contours run from one corner to the other."""

from __future__ import annotations

import numpy as np

FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400,
             377, 152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)

LIPS_OUTER_UPPER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)
LIPS_OUTER_LOWER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291)
LIPS_INNER_UPPER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
LIPS_INNER_LOWER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
MOUTH_CORNERS = (61, 291)  # outer corners: subject's right, left

RIGHT_EYE_UPPER = (33, 246, 161, 160, 159, 158, 157, 173, 133)
RIGHT_EYE_LOWER = (33, 7, 163, 144, 145, 153, 154, 155, 133)
LEFT_EYE_UPPER = (263, 466, 388, 387, 386, 385, 384, 398, 362)
LEFT_EYE_LOWER = (263, 249, 390, 373, 374, 380, 381, 382, 362)

RIGHT_BROW = (70, 63, 105, 66, 107, 46, 53, 52, 65, 55)
LEFT_BROW = (300, 293, 334, 296, 336, 276, 283, 282, 295, 285)
RIGHT_BROW_INNER, RIGHT_BROW_OUTER = (107, 66, 55, 65), (70, 63, 46, 53)
LEFT_BROW_INNER, LEFT_BROW_OUTER = (336, 296, 285, 295), (300, 293, 276, 283)

NOSE = (1, 4, 5, 195, 197, 6, 168, 98, 327, 2, 94, 19)
CHEEKS = (50, 280, 205, 425, 187, 411, 123, 352, 117, 346, 36, 266, 203, 423, 216, 436, 206, 426)
CHIN = (152, 175, 199, 200, 18, 32, 262, 208, 428, 171, 396)
FOREHEAD = (151, 9, 108, 337, 69, 299, 104, 333)

# Soukupova & Cech eye aspect ratio points p1..p6 (corner, upper, upper, corner, lower, lower)
EAR_RIGHT = (33, 160, 158, 133, 153, 144)
EAR_LEFT = (362, 385, 387, 263, 373, 380)


def _uniq(*groups: tuple[int, ...]) -> tuple[int, ...]:
    seen: dict[int, None] = {}
    for g in groups:
        for i in g:
            seen.setdefault(i, None)
    return tuple(seen)


LIPS = _uniq(LIPS_OUTER_UPPER, LIPS_OUTER_LOWER, LIPS_INNER_UPPER, LIPS_INNER_LOWER)
EYES = _uniq(RIGHT_EYE_UPPER, RIGHT_EYE_LOWER, LEFT_EYE_UPPER, LEFT_EYE_LOWER)
# The vertices that steer the dense warp: outline, features and a few surface points.
WARP_CONTROL = _uniq(FACE_OVAL, LIPS, EYES, RIGHT_BROW, LEFT_BROW, NOSE, CHEEKS, CHIN, FOREHEAD)


def eye_aspect_ratio(landmarks: np.ndarray) -> np.ndarray:
    """(2,) EAR of the subject's left and right eye from (478, >=2) landmarks."""
    out = []
    for p in (EAR_LEFT, EAR_RIGHT):
        q = landmarks[list(p), :2]
        vertical = np.linalg.norm(q[1] - q[5]) + np.linalg.norm(q[2] - q[4])
        out.append(vertical / (2.0 * max(np.linalg.norm(q[0] - q[3]), 1e-6)))
    return np.array(out, np.float32)


def mouth_opening(landmarks: np.ndarray) -> float:
    """Inner-lip gap over mouth width (scale-free), from (478, >=2) landmarks."""
    up = landmarks[list(LIPS_INNER_UPPER[3:8]), :2]
    lo = landmarks[list(LIPS_INNER_LOWER[3:8]), :2]
    width = np.linalg.norm(landmarks[61, :2] - landmarks[291, :2])
    return float(np.linalg.norm(up - lo, axis=1).mean() / max(width, 1e-6))
