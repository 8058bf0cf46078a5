"""The metric networks' weight readers; they live in `talkinghead.nets.files` (shared with the
renderers' losses) and are re-exported here."""

from talkinghead.nets.files import load_weights, read_state_dict

__all__ = ["load_weights", "read_state_dict"]
