"""Image and distribution measures that need no learned weights.

* PSNR, and SSIM (Wang et al., IEEE TIP 2004: 11x11 Gaussian window, sigma 1.5, K1 0.01,
  K2 0.03, per RGB channel, averaged), on uint8 frames.
* CPBD, the no-reference sharpness measure of Narvekar & Karam (IEEE TIP 2011) reported by
  SadTalker and DAWN: the share of edges whose width stays below the just-noticeable-blur width
  of their 64x64 block (P(blur) <= 63%). Higher is sharper. Computed exactly as the `cpbd==1.0.7`
  package (the authors' MATLAB code ported), vectorized: tests pin it to that package.
* The Frechet distance between Gaussians fitted to two feature sets: FID and FVD on network
  features, E-FID on expression coefficients (blendshapes here, 3DMM in the papers).
"""

from __future__ import annotations

import warnings

import numpy as np


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0 ** 2 / mse)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM of two (H, W, 3) or (H, W) uint8 images (valid windows only)."""
    import cv2

    g = cv2.getGaussianKernel(11, 1.5, cv2.CV_64F)
    x, y = np.atleast_3d(a).astype(np.float64), np.atleast_3d(b).astype(np.float64)

    def blur(t):                          # separable Gaussian, cropped to the valid windows
        return np.atleast_3d(cv2.sepFilter2D(t, cv2.CV_64F, g, g))[5:-5, 5:-5]

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx ** 2, blur(y * y) - my ** 2, blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    return float(s.mean())


_JNB_LOW_CONTRAST, _JNB_HIGH_CONTRAST = 5.0, 3.0   # just-noticeable widths: block contrast <= 50, > 50
_MAX_RUN = 100                                      # the reference stops counting at 100 px a side


def _sobel_edges(g: np.ndarray) -> np.ndarray:
    """Octave's `edge(I, 'sobel')` as cpbd.octave.sobel: thresholded squared x-gradient, thinned
    to pixels above both row or both column neighbours."""
    from scipy.ndimage import convolve

    h = np.array([[1.0, 2.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -2.0, -1.0]]) / 8.0
    strength = np.square(convolve(g, h.T))
    strength[strength <= 2 * np.sqrt(np.mean(strength))] = 0
    zc, zr = np.zeros((g.shape[0], 1)), np.zeros((1, g.shape[1]))
    x = (strength > np.c_[zc, strength[:, :-1]]) & (strength > np.c_[strength[:, 1:], zc])
    y = (strength > np.r_[zr, strength[:-1]]) & (strength > np.r_[strength[1:], zr])
    return x | y


def _runs(steps: np.ndarray, reverse: bool) -> np.ndarray:
    """Per position, how many consecutive True `steps` end there (reverse: start there), by row."""
    out = np.zeros(steps.shape, np.int64)
    cols = range(steps.shape[1] - 1, -1, -1) if reverse else range(steps.shape[1])
    prev = np.zeros(steps.shape[0], np.int64)
    for j in cols:
        prev = np.where(steps[:, j], prev + 1, 0)
        out[:, j] = prev
    return out


def _edge_widths(g: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Marziliano widths at the vertical edges, as cpbd's `marziliano_method`: for an edge pixel
    whose gradient angle rounds to 0 (or +-180) degrees, 1 + the run of strictly rising (falling)
    steps from col-1 leftwards plus 1 + the run from col+1 rightwards; 0 elsewhere."""
    gy, gx = np.gradient(g)
    angle = np.where(gx != 0, np.degrees(np.arctan2(gy, gx)), 0.0)
    angle[(gx == 0) & (gy == np.pi / 2)] = 90.0      # the reference's own special case
    widths = np.zeros(g.shape)
    if not angle.any():
        return widths
    q = 45 * np.round(angle / 45)
    diff = np.diff(g, axis=1)                         # (H, W-1): diff[:, j] = g[:, j+1] - g[:, j]
    h, w = g.shape
    rows, cols = np.nonzero(edges[1:-1, 1:-1])
    rows, cols = rows + 1, cols + 1
    for sign, on in ((1, q[rows, cols] == 0), (-1, np.abs(q[rows, cols]) == 180)):
        up = sign * diff > 0
        left, right = _runs(up, reverse=False), _runs(up, reverse=True)
        r, c = rows[on], cols[on]
        k_left = np.where(c >= 2, left[r, np.maximum(c - 2, 0)], 0)
        k_right = np.where(c + 1 <= w - 2, right[r, np.minimum(c + 1, w - 2)], 0)
        widths[r, c] = np.minimum(k_left, _MAX_RUN) + np.minimum(k_right, _MAX_RUN) + 2
    return widths


def _gray(image: np.ndarray) -> np.ndarray:
    """float64 luma of an (H, W, 3) RGB or (H, W) uint8 image (ITU-R 601, as PIL's 'L')."""
    if image.ndim == 2:
        return image.astype(np.float64)
    import cv2

    return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY).astype(np.float64)


def cpbd(image: np.ndarray, block: int = 64, edge_share: float = 0.002, beta: float = 3.6) -> float:
    """CPBD sharpness in [0, 1] of an (H, W, 3) RGB or (H, W) gray uint8 image, as `cpbd.compute`
    (Narvekar & Karam's reference port): edge blocks by Canny, widths at thinned Sobel-x edges,
    P(blur) per edge from its block's just-noticeable width, share of edges with P(blur) in the
    first 64 histogram buckets (round(100 P) <= 63). 0 where no block has edges, as the reference."""
    from skimage.feature import canny

    g = _gray(image)
    canny_edges = canny(g)
    widths = _edge_widths(g, _sobel_edges(g))
    counts = np.zeros(101, np.int64)
    for y0 in range(0, g.shape[0] - block + 1, block):
        for x0 in range(0, g.shape[1] - block + 1, block):
            tile = np.s_[y0:y0 + block, x0:x0 + block]
            if np.count_nonzero(canny_edges[tile]) <= block * block * edge_share:
                continue
            contrast = int(g[tile].max() - g[tile].min())
            jnb = _JNB_LOW_CONTRAST if contrast <= 50 else _JNB_HIGH_CONTRAST
            w = widths[tile][widths[tile] != 0]
            p = 1 - np.exp(-np.abs(w / jnb) ** beta)
            counts += np.bincount(np.round(p * 100).astype(np.int64), minlength=101)
    total = counts.sum()
    return float(counts[:64].sum() / total) if total else 0.0


class FrechetError(ValueError):
    """The matrix square root came out with a large imaginary part (pytorch-fid raises too)."""


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^1/2) of two (N, D) feature sets, as
    pytorch-fid's `calculate_frechet_distance`: eps 1e-6 on the diagonals when the root is not
    finite; a root whose diagonal has an imaginary part above 1e-3 raises FrechetError, a smaller
    one is dropped. One difference on purpose: a tiny negative result (rounding) reads 0."""
    from scipy import linalg

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 2 or len(b) < 2:
        return float("nan")
    mu = a.mean(0) - b.mean(0)
    sa, sb = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    with warnings.catch_warnings():       # singular with fewer samples than dimensions
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        root = linalg.sqrtm(sa @ sb)
        if not np.isfinite(root).all():   # near-singular (few samples): regularise as pytorch-fid
            eps = np.eye(len(sa)) * 1e-6
            root = linalg.sqrtm((sa + eps) @ (sb + eps))
    if np.iscomplexobj(root):
        if not np.allclose(np.diagonal(root).imag, 0, atol=1e-3):
            raise FrechetError(f"imaginary component {np.max(np.abs(root.imag)):.3g} in the covariance "
                               "square root (too few samples for the feature size?)")
        root = root.real
    value = mu @ mu + np.trace(sa) + np.trace(sb) - 2 * np.trace(root)
    return float(max(value, 0.0))
