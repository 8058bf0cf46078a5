"""`generate --renderer sadtalker`: SadTalker's face render over its released checkpoints
(sadtalker.txt, Sec. 3.3). Being built (#16)."""

from __future__ import annotations

from talkinghead.errors import InputError


class SadTalkerRenderer:
    name = "sadtalker"
    crops_itself = True

    @classmethod
    def from_options(cls, options) -> "SadTalkerRenderer":
        if not options.checkpoint(cls.name):
            raise InputError("--renderer sadtalker needs --sadtalker-checkpoints DIR "
                             "(SadTalker's released checkpoints folder)")
        raise NotImplementedError("the SadTalker renderer is not built yet (#16)")
