"""Deep3DFaceRecon's coefficient regressor (Deng et al. 2019), SadTalker's source analysis
(sadtalker.txt, Sec. 3.1): a ResNet-50 (torchvision layout, no classifier) and seven 1x1 heads
giving 257 coefficients of the Basel face model: identity 80, expression 64, texture 80,
angles 3 (radians), lighting 27 (SH), translation 3.

Its crop convention: five landmarks (eye centres, nose tip, mouth corners; y pointing up) are
fitted by least squares to the standard face's five 3D points (`STANDARD_5P`, from
Deep3DFaceRecon's `similarity_Lm3D_all.mat`) with a weak-perspective projection (POS); the image
is scaled by 102 / s and cut to 224 x 224 around the fitted centre. Keys follow the official
`face_3drecon.*` (`backbone.*`, `final_layers.{0..6}.*`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# the standard face's 5 points (left eye, right eye, nose, left mouth corner, right mouth corner)
STANDARD_5P = np.array([
    [-0.3114865720272064, 0.29036077857017517, 0.13377952575683594],
    [0.30979886651039124, 0.289720356464386, 0.1317952573299408],
    [0.003253498813137412, -0.04617932438850403, 0.5524424314498901],
    [-0.25216928124427795, -0.3813391625881195, 0.22405731678009033],
    [0.24846619367599487, -0.38128235936164856, 0.22235769033432007]], np.float32)
COEFF_SPLITS = {"id": (0, 80), "exp": (80, 144), "tex": (144, 224), "angle": (224, 227),
                "gamma": (227, 254), "trans": (254, 257)}


class Bottleneck(nn.Module):
    """torchvision's ResNet v1.5 bottleneck (stride on the 3x3 convolution)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.downsample = None
        if stride != 1 or inplanes != out:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, out, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNet50(nn.Module):
    """(B, 3, H, W) -> (B, 2048, 1, 1) pooled features."""

    def __init__(self, layers: tuple[int, ...] = (3, 4, 6, 3)) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        inplanes = 64
        for i, (n, planes) in enumerate(zip(layers, (64, 128, 256, 512))):
            blocks = [Bottleneck(inplanes, planes, 1 if i == 0 else 2)]
            blocks += [Bottleneck(planes * 4, planes) for _ in range(n - 1)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            inplanes = planes * 4
        self.avgpool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.avgpool(x)


class FaceReconNet(nn.Module):
    """224 x 224 aligned face in [0, 1] (B, 3, 224, 224) -> (B, 257) coefficients."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = ResNet50()
        self.final_layers = nn.ModuleList(nn.Conv2d(2048, n, 1) for n in (80, 64, 80, 3, 27, 2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.backbone(x)
        return torch.cat([layer(x) for layer in self.final_layers], dim=1).flatten(1)


def split_coefficients(coeffs: np.ndarray) -> dict[str, np.ndarray]:
    """(..., 257) -> id, exp, tex, angle, gamma, trans."""
    return {k: coeffs[..., a:b] for k, (a, b) in COEFF_SPLITS.items()}


def _pos(points: np.ndarray, standard: np.ndarray) -> tuple[np.ndarray, float]:
    """Weak-perspective fit of 3D `standard` (n, 3) to image `points` (n, 2): translation, scale."""
    n = len(points)
    a = np.zeros((2 * n, 8))
    a[0::2, 0:3], a[0::2, 3] = standard, 1
    a[1::2, 4:7], a[1::2, 7] = standard, 1
    k = np.linalg.lstsq(a, points.reshape(2 * n, 1), rcond=None)[0]
    s = (np.linalg.norm(k[0:3]) + np.linalg.norm(k[4:7])) / 2
    return np.array([k[3, 0], k[7, 0]]), float(s)


@dataclass(frozen=True)
class ReconCrop:
    image: np.ndarray          # (224, 224, 3) uint8
    params: np.ndarray         # (5,) w0, h0, scale, tx, ty (Deep3DFaceRecon's trans_params)


def align_for_recon(image: np.ndarray, five: np.ndarray, target: int = 224,
                    rescale: float = 102.0) -> ReconCrop:
    """Deep3DFaceRecon's crop: `five` (5, 2) image points (x right, y DOWN) in the order of
    STANDARD_5P; the image is resized and cropped as PIL does (bicubic)."""
    from PIL import Image

    h0, w0 = image.shape[:2]
    pts = np.stack([five[:, 0], h0 - 1 - five[:, 1]], 1)          # y up, as the fit expects
    t, s = _pos(pts, STANDARD_5P.astype(np.float64))
    s = rescale / s
    w, h = int(w0 * s), int(h0 * s)
    left = int(w / 2 - target / 2 + float((t[0] - w0 / 2) * s))
    up = int(h / 2 - target / 2 + float((h0 / 2 - t[1]) * s))
    pil = Image.fromarray(image).resize((w, h), resample=Image.BICUBIC)
    crop = pil.crop((left, up, left + target, up + target))
    return ReconCrop(np.asarray(crop), np.array([w0, h0, s, t[0], t[1]], np.float32))
