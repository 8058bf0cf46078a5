"""The pose/blink conditions of DAWN models trained here (dawn.txt Sec. 3.3: delta rho_i, the
pose and eye change from the source): what `prepare`d shards give the training tasks
(`training/video_data.py`) and what the renderer feeds a model trained on them, one definition."""

from __future__ import annotations

import numpy as np

from talkinghead.types import Motion


def pose_blink(motion: Motion) -> tuple[np.ndarray, np.ndarray]:
    """rho per frame: pose (T, 6) = yaw/pitch/roll / 10 deg and three zeros; blink (T, 2).

    The translation slots stay zero: in prepared real video the face fit's translation moves with
    the jaw (r 0.64 / -0.80 / 0.75 with jawOpen over 20 training videos), so a model conditioned on
    it reads the mouth from the pose, while our motion models generate none (zero at `generate`):
    measured, zeroing it at inference cut the sampled lip flow's r from 0.90 to 0.59."""
    pose = np.concatenate([motion.rotation / 10.0, np.zeros_like(motion.translation)], 1).astype(np.float32)
    return pose, motion.blink.astype(np.float32)
