"""ArcFace identity embedding (Deng et al., CVPR 2019) with insightface's IResNet backbone
(`arcface_torch`, e.g. ms1mv3_arcface_r100_fp16 `backbone.pth`): CSIM as in DiffTalk, FD2Talk,
DAWN and Hallo2 is the cosine similarity of two such embeddings.

Input: a 112x112 RGB face aligned by a 5-point similarity transform to ARCFACE_TEMPLATE,
scaled to [-1, 1]. Module names follow the published state dict (conv1, bn1, prelu,
layer1..4 of IBasicBlock, bn2, fc, features).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

DEPTHS = {"r18": (2, 2, 2, 2), "r34": (3, 4, 6, 3), "r50": (3, 4, 14, 3), "r100": (3, 13, 30, 3)}
# eye centres (subject's right, left in the image order left->right), nose tip, mouth corners
ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                             [41.5493, 92.3655], [70.7299, 92.2041]], np.float32)


class IBasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, eps=1e-5)
        self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout, eps=1e-5)
        self.prelu = nn.PReLU(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout, eps=1e-5)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            nn.BatchNorm2d(cout, eps=1e-5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (x if self.downsample is None else self.downsample(x))


class IResNet(nn.Module):
    def __init__(self, depth: str = "r100", dim: int = 512) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-5)
        self.prelu = nn.PReLU(64)
        cin = 64
        for i, (blocks, width) in enumerate(zip(DEPTHS[depth], (64, 128, 256, 512))):
            layer = [IBasicBlock(cin, width, 2)] + [IBasicBlock(width, width, 1) for _ in range(blocks - 1)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*layer))
            cin = width
        self.bn2 = nn.BatchNorm2d(512, eps=1e-5)
        self.dropout = nn.Dropout(0.0)
        self.fc = nn.Linear(512 * 7 * 7, dim)
        self.features = nn.BatchNorm1d(dim, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, 112, 112) RGB in [-1, 1] -> (B, dim) embedding."""
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))     # (B, 512, 7, 7)
        return self.features(self.fc(self.dropout(self.bn2(x).flatten(1))))


def five_points(landmarks: np.ndarray) -> np.ndarray:
    """(5, 2) ArcFace points from the face model's 478 landmarks (iris centres, nose tip, mouth
    corners), ordered as ARCFACE_TEMPLATE: image-left eye first."""
    pts = landmarks[[468, 473, 1, 61, 291], :2].astype(np.float32)
    for a, b in ((0, 1), (3, 4)):
        if pts[a, 0] > pts[b, 0]:
            pts[[a, b]] = pts[[b, a]]
    return pts


def similarity_fit(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """(2, 3) least-squares similarity (rotation, uniform scale, translation) taking the (N, 2)
    points `src` onto `dst`: Umeyama (IEEE TPAMI 1991), as skimage's SimilarityTransform.estimate
    that insightface's `norm_crop` uses. All points count; none is dropped as an outlier."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)                                # (2, 2)
    u, sv, vt = np.linalg.svd(cov)
    sign = np.diag([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
    rot = u @ sign @ vt
    scale = float(np.trace(np.diag(sv) @ sign)) / float((s ** 2).sum(1).mean())
    return np.hstack([scale * rot, (mu_d - scale * rot @ mu_s)[:, None]])


def align_face(image: np.ndarray, landmarks: np.ndarray, size: int = 112) -> np.ndarray:
    """(size, size, 3) uint8 face chip, similarity-aligned to the ArcFace template by least
    squares over the five points (insightface `face_align.norm_crop`)."""
    import cv2

    matrix = similarity_fit(five_points(landmarks), ARCFACE_TEMPLATE * size / 112.0)
    return cv2.warpAffine(image, matrix, (size, size), borderValue=0)


class ArcFaceIdentity:
    """Embeds aligned faces; `similarity` is CSIM (cosine)."""

    def __init__(self, path, depth: str = "r100") -> None:
        from talkinghead.evaluation.nets.weights import load_weights

        self.net = load_weights(IResNet(depth), path, f"ArcFace IResNet-{depth[1:]}")

    @torch.no_grad()
    def embed(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        chip = torch.from_numpy(align_face(image, landmarks)).permute(2, 0, 1)[None].float()
        return self.net(chip / 127.5 - 1.0)[0].numpy()

    @staticmethod
    def similarity(a: np.ndarray, b: np.ndarray) -> float:
        return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))
