"""Cheap input checks for a job, without face analysis: what a server runs before it queues one.

Each check decodes the file the way the pipeline will (so a corrupt, empty or too-short file
fails now with the pipeline's own one-line InputError) but skips the models. Faces are found
only when the job runs (a portrait without a face fails the job, not the request).
"""

from __future__ import annotations

from pathlib import Path

from talkinghead.errors import InputError


def check_image(path: str | Path) -> None:
    from talkinghead.io.image import read_image

    read_image(path)


def check_speech(path: str | Path) -> None:
    """Speech for `generate`: decodable and at least the pipeline's minimum length."""
    from talkinghead.pipelines.generate import load_speech

    load_speech(path)


def check_video(path: str | Path) -> None:
    """A driving/reference video: opens, has a video stream and decodes a first frame."""
    from talkinghead.io.video import iter_frames

    if next(iter_frames(path), None) is None:
        raise InputError(f"{path}: video has no frames")


def check_motion_model(name: str) -> None:
    from talkinghead.motion.generate import MOTION_MODELS

    if name not in MOTION_MODELS:
        raise InputError(f"unknown motion model {name!r}; choose one of {', '.join(MOTION_MODELS)}")


def motion_model_names() -> list[str]:
    from talkinghead.motion.generate import MOTION_MODELS

    return list(MOTION_MODELS)
