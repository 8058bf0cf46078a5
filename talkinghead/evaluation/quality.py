"""Image and distribution measures that need no learned weights.

* PSNR, and SSIM (Wang et al., IEEE TIP 2004: 11x11 Gaussian window, sigma 1.5, K1 0.01,
  K2 0.03, per RGB channel, averaged), on uint8 frames.
* CPBD, the no-reference sharpness measure of Narvekar & Karam (IEEE TIP 2011) reported by
  SadTalker and DAWN: the share of edges whose width stays below the just-noticeable-blur width
  of their 64x64 block (P(blur) <= 63%). Higher is sharper.
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


def _edge_widths(gray: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Width (px) of each vertical edge pixel along its row, between the intensity extrema
    on either side (Marziliano et al.), for rows where the edge rises or falls."""
    h, w = gray.shape
    widths = np.full(gray.shape, np.nan, np.float32)
    ys, xs = np.nonzero(edges)
    for y, x in zip(ys, xs):
        row = gray[y]
        if x == 0 or x == w - 1 or row[x + 1] == row[x - 1]:
            continue
        sign = 1.0 if row[x + 1] > row[x - 1] else -1.0
        right = x
        while right < w - 1 and sign * (row[right + 1] - row[right]) > 0:
            right += 1
        left = x
        while left > 0 and sign * (row[left] - row[left - 1]) > 0:
            left -= 1
        widths[y, x] = right - left
    return widths


def cpbd(image: np.ndarray, block: int = 64, edge_share: float = 0.002, beta: float = 3.6) -> float:
    """CPBD sharpness in [0, 1] of an (H, W, 3) uint8 RGB or (H, W) gray image."""
    import cv2

    gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    g = gray.astype(np.float64)
    canny = cv2.Canny(gray, 100, 200) > 0
    sobel = np.abs(cv2.Sobel(g, cv2.CV_64F, 1, 0, ksize=3))
    vertical = canny & (sobel > 0.5 * sobel[canny].max() if canny.any() else canny)
    widths = _edge_widths(g, vertical)
    probs = []
    for y0 in range(0, g.shape[0] - block + 1, block):
        for x0 in range(0, g.shape[1] - block + 1, block):
            tile = np.s_[y0:y0 + block, x0:x0 + block]
            if canny[tile].mean() <= edge_share:
                continue
            jnb = 5.0 if g[tile].max() - g[tile].min() <= 50 else 3.0
            w = widths[tile]
            w = w[np.isfinite(w) & (w > 0)]
            probs.append(1.0 - np.exp(-np.abs(w / jnb) ** beta))
    p = np.concatenate(probs) if probs else np.zeros(0)
    return float(np.mean(p <= 1.0 - np.exp(-1.0))) if p.size else float("nan")


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^1/2) of two (N, D) feature sets."""
    from scipy import linalg

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 2 or len(b) < 2:
        return float("nan")
    mu = a.mean(0) - b.mean(0)
    sa, sb = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    with warnings.catch_warnings():       # singular with fewer samples than dimensions
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        root = linalg.sqrtm(sa @ sb)
    if not np.isfinite(root).all():       # near-singular (few samples): regularise as pytorch-fid
        eps = np.eye(len(sa)) * 1e-6
        root = linalg.sqrtm((sa + eps) @ (sb + eps))
    value = mu @ mu + np.trace(sa) + np.trace(sb) - 2 * np.trace(np.real(root))
    return float(max(value, 0.0))
