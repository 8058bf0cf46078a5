"""The pose/blink conditions of DAWN models trained here (dawn.txt Sec. 3.3: delta rho_i, the
pose and eye change from the source): what `prepare`d shards give the training tasks
(`training/video_data.py`) and what the renderer feeds a model trained on them, one definition."""

from __future__ import annotations

import numpy as np

from talkinghead.types import Motion


def pose_blink(motion: Motion) -> tuple[np.ndarray, np.ndarray]:
    """rho per frame: pose (T, 6) = yaw/pitch/roll / 10 deg and translation (cm); blink (T, 2)."""
    pose = np.concatenate([motion.rotation / 10.0, motion.translation], 1).astype(np.float32)
    return pose, motion.blink.astype(np.float32)
