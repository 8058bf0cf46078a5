"""talkinghead: audio- and video-driven portrait animation, offline on a CPU.

Data flow: image + (audio | driving video) -> face analysis -> Motion -> frames -> video.
The core imports fast; heavy dependencies (mediapipe, torch, av) load where they are used.
"""

from talkinghead.errors import TalkingHeadError
from talkinghead.types import BLENDSHAPE_NAMES, Motion

__all__ = ["BLENDSHAPE_NAMES", "Motion", "TalkingHeadError"]
__version__ = "0.1.0"
