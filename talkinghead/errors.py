"""Errors a user can cause. The CLI prints them as one line and exits non-zero."""


class TalkingHeadError(Exception):
    """A problem with the user's input or environment, explained in one line."""

    exit_code = 2


class NoFaceError(TalkingHeadError):
    """No face was found where one is required."""


class InputError(TalkingHeadError):
    """A file could not be read or has unusable content."""


class OutputError(TalkingHeadError):
    """The output could not be written."""
