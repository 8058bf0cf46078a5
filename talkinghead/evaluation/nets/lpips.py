"""LPIPS for `talkinghead eval`: the model lives in `talkinghead.nets.lpips` (shared with the
renderers); this keeps the evaluation-side loader of the user's files."""

from __future__ import annotations

from talkinghead.nets.lpips import LPIPS

__all__ = ["LPIPS", "load_lpips"]


def load_lpips(paths, net: str = "alex") -> LPIPS:
    """The user's torchvision trunk + LPIPS v0.1 head files, or the offline weights when none."""
    return LPIPS.from_files(list(paths), net) if paths else LPIPS.offline(net)
