"""Head-turn background fill: the head moves over a still background (issue #10, step 4).

The warp of geometric.py is smooth between the head ring (moving with the head) and the fixed
outer ring, so a large head turn would drag and stretch the background next to the head. Here
the portrait is split once into a foreground layer (head, hair, neck, body) and a background
plate, as layered image-based reenactment does (SadTalker's face render, sadtalker.txt Sec. 3.3,
and DAWN's LFG, dawn.txt, learn the same occlusion/fill from video; we have no weights):

  * foreground: GrabCut (Rother et al. 2004, OpenCV) seeded by the face model's landmarks:
    inside the head ring (1.3 face-oval radii, which the warp moves rigidly with the head:
    hair, ears) and a neck strip under the chin certainly foreground, out to 1.6 radii probably
    (long hair), beyond 1.9 radii above the chin certainly background. GrabCut alone cut dark
    hair off a dark background. Binary, so a frame with no motion is the source exactly;
  * background plate: the source with the (dilated) foreground inpainted (Telea 2004, at 64 px
    and blurred: a disoccluded background is a smooth blur of its surroundings);
  * per frame, the foreground mask is carried by the same backward map as the image, and
    out = warped where the warped mask is set, the still plate elsewhere. Background pixels are
    never moved; where the head uncovers background, the plate shows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from talkinghead.face import regions as R

WORK_SIDE = 192        # segmentation resolution (longer side of the region box)
FILL_SIDE = 64         # inpainting resolution: a disoccluded background is a smooth blur
GRABCUT_ITERS = 3
FAR = 1.9              # beyond the face oval scaled by this, above the chin: always background


@dataclass(frozen=True)
class Backdrop:
    """Layers of the portrait inside the renderer's region box."""

    mask: np.ndarray     # (H, W) float32 over the whole image: 1 on the foreground (head, hair,
                         # body) inside the box, else 0
    plate: np.ndarray    # (h, w, 3) uint8 in the box: source background, foreground inpainted


def _seed(landmarks: np.ndarray, box: tuple[int, int, int, int], shape: tuple[int, int],
          head_ring: float, scale: float) -> np.ndarray:
    """(h, w) uint8 GrabCut labels at the working scale from the landmarks."""
    import cv2

    x0, y0 = box[:2]
    h, w = shape
    oval = (landmarks[list(R.FACE_OVAL), :2] - [x0, y0]) * scale
    c = oval.mean(0)
    lab = np.full((h, w), cv2.GC_PR_BGD, np.uint8)
    poly = lambda k: [np.round(c + k * (oval - c)).astype(np.int32)]  # noqa: E731  oval scaled by k
    chin = oval[np.argmax(oval[:, 1])]
    far = np.ones((h, w), np.uint8)
    cv2.fillPoly(far, poly(FAR), 0)
    far[int(chin[1]):] = 0                                           # not below the chin: the body
    lab[far > 0] = cv2.GC_BGD
    cv2.fillPoly(lab, poly(head_ring + 0.3), cv2.GC_PR_FGD)         # long hair
    cv2.fillPoly(lab, poly(head_ring), cv2.GC_FGD)  # moves rigidly with the head in the warp
    # the neck below the chin goes with the head layer whatever it looks like (a collar, a
    # scarf): the warp carries the skin under a dropping jaw there, as it always did
    half = 0.35 * float(np.ptp(oval[:, 0]))
    neck = (int(chin[0] - half), int(c[1])), (int(chin[0] + half), h - 1)
    cv2.rectangle(lab, *neck, cv2.GC_FGD, -1)
    return lab


def make_backdrop(image: np.ndarray, landmarks: np.ndarray, box: tuple[int, int, int, int],
                  head_ring: float = 1.3) -> Backdrop | None:
    """Foreground mask and background plate of `image` inside `box` (x0, y0, x1, y1), or None
    when the box is too small to split."""
    import cv2

    x0, y0, x1, y1 = box
    region = np.ascontiguousarray(image[y0:y1, x0:x1])
    h, w = region.shape[:2]
    if min(h, w) < 16:
        return None
    scale = min(1.0, WORK_SIDE / max(h, w))
    sw, sh = max(8, int(round(w * scale))), max(8, int(round(h * scale)))
    small = cv2.resize(region, (sw, sh), interpolation=cv2.INTER_AREA)
    lab = _seed(landmarks, box, (sh, sw), head_ring, sw / w)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)   # GrabCut's k-means draws from OpenCV's global generator: same split always
    try:
        cv2.grabCut(cv2.cvtColor(small, cv2.COLOR_RGB2BGR), lab, None, bgd, fgd, GRABCUT_ITERS,
                    cv2.GC_INIT_WITH_MASK)
    except cv2.error:                    # degenerate colour models (a flat image): no split
        return None
    fg = np.isin(lab, (cv2.GC_FGD, cv2.GC_PR_FGD)).astype(np.uint8)
    fg = _largest_component(fg)
    # edge pixels mix both layers: they go with the foreground (a thin rim moves with the head),
    # so the plate is the source wherever the mask is 0 and a still frame is the source exactly
    hole = cv2.dilate(fg, np.ones((5, 5), np.uint8))
    mask = cv2.resize(hole.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR) > 0
    k = min(1.0, FILL_SIDE / max(h, w))
    fw, fh = max(8, int(round(w * k))), max(8, int(round(h * k)))
    tiny_hole = (cv2.resize(hole.astype(np.float32), (fw, fh), interpolation=cv2.INTER_AREA) > 0)
    tiny_hole = cv2.dilate(tiny_hole.astype(np.uint8), np.ones((3, 3), np.uint8))
    filled = cv2.inpaint(cv2.resize(region, (fw, fh), interpolation=cv2.INTER_AREA), tiny_hole, 3,
                         cv2.INPAINT_TELEA)
    filled = cv2.GaussianBlur(cv2.resize(filled, (w, h), interpolation=cv2.INTER_CUBIC), (0, 0),
                              0.5 * w / fw)
    plate = region.copy()
    plate[mask] = filled[mask]
    full = np.zeros(image.shape[:2], np.float32)
    full[y0:y1, x0:x1] = mask
    return Backdrop(full, plate)


def _largest_component(fg: np.ndarray) -> np.ndarray:
    """Keep the connected foreground piece that holds the face (the largest one)."""
    import cv2

    n, labels, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
    if n <= 2:
        return fg
    keep = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return (labels == keep).astype(np.uint8)


def composite(warped: np.ndarray, fine: np.ndarray, backdrop: Backdrop) -> np.ndarray:
    """(h, w, 3) uint8: the warped region over the still plate, where the warped foreground mask
    (carried by the same backward map `fine`: (h, w, 2) source x, y in image px) is."""
    import cv2

    m = cv2.remap(backdrop.mask, fine, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return cv2.blendLinear(warped, backdrop.plate, m, 1.0 - m)
