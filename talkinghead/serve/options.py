"""A job's options: the CLI's options as JSON, checked before the job is queued.

`generate` jobs take a portrait and speech, `drive` jobs a portrait and a driving video. The
field names are the CLI's long options with `_` for `-` (either is accepted). Files are never
named here: reference videos (`ref_pose`, `ref_blink`) are uploaded as files of the request.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from talkinghead.errors import InputError

KINDS = ("generate", "drive")
_SUFFIX = re.compile(r"^\.[a-z0-9]{2,5}$")
# the uploads each kind takes: (required, optional)
INPUTS = {"generate": (("image", "audio"), ("ref_pose", "ref_blink")),
          "drive": (("image", "video"), ("audio",))}


class _Common(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    expression_scale: float = Field(1.0, ge=0.0, le=3.0)
    pose_scale: float = Field(1.0, ge=0.0, le=3.0)
    still: bool = False
    crop: bool = False
    size: int = Field(512, ge=64, le=1024, description="crop size with crop")
    fps: float = Field(25.0, ge=5.0, le=60.0)


class GenerateOptions(_Common):
    """Options of `talkinghead generate`."""

    motion_model: str = "fd2talk"
    seed: int = Field(0, ge=0, le=2**31 - 1)
    steps: int = Field(10, ge=1, le=100)
    pose_style: int | None = Field(None, ge=0, le=7)
    blink_rate: float | None = Field(None, ge=0.0, le=3.0)
    no_gate: bool = False


class DriveOptions(_Common):
    """Options of `talkinghead drive`."""

    no_smooth: bool = False


MODELS = {"generate": GenerateOptions, "drive": DriveOptions}


@dataclass
class JobSpec:
    """What a worker needs: the kind, checked options, and input files by role."""

    kind: str
    options: dict[str, Any]
    inputs: dict[str, str] = field(default_factory=dict)    # role -> file name in the job folder

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "options": self.options, "inputs": self.inputs}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> JobSpec:
        return cls(d["kind"], dict(d["options"]), dict(d["inputs"]))


def job_kind(roles: set[str]) -> str:
    """`drive` when a driving video is given, else `generate`."""
    return "drive" if "video" in roles else "generate"


def parse_options(kind: str, raw: dict[str, Any] | str | None) -> dict[str, Any]:
    """Checked options with defaults filled in; InputError names the first bad field."""
    import json

    if raw is None or raw == "":
        raw = {}
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as e:
            raise InputError(f"options: not valid JSON ({e.msg})") from None
    if not isinstance(raw, dict):
        raise InputError("options: must be a JSON object")
    raw = {str(k).lstrip("-").replace("-", "_"): v for k, v in raw.items()}
    if isinstance(raw.get("fps"), int) and not isinstance(raw.get("fps"), bool):
        raw["fps"] = float(raw["fps"])
    for k in ("expression_scale", "pose_scale", "blink_rate"):
        if isinstance(raw.get(k), int) and not isinstance(raw.get(k), bool):
            raw[k] = float(raw[k])
    try:
        opts = MODELS[kind].model_validate(raw).model_dump()
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "options"
        raise InputError(f"options: {where}: {err['msg']}") from None
    if kind == "generate":
        from talkinghead.pipelines.checks import check_motion_model

        check_motion_model(opts["motion_model"])
    return opts


def server_name(role: str, given: str | None) -> str:
    """The name an input gets on disk: its role plus a plain suffix; a client name with a path in
    it is refused (no client-chosen names, no traversal)."""
    given = given or ""
    if any(c in given for c in "/\\\0") or given.startswith(".."):
        raise InputError(f"{role}: file name {given[:60]!r} has a path in it; send a bare name")
    suffix = Path(given).suffix.lower()
    return role + (suffix if _SUFFIX.match(suffix) else "")


def check_job(kind: str, folder: Path, inputs: dict[str, str]) -> None:
    """The pipelines' decode checks on every input (InputError names the role, not the path)."""
    from talkinghead.pipelines.checks import check_image, check_speech, check_video

    checks = {"image": check_image, "audio": check_speech, "video": check_video,
              "ref_pose": check_video, "ref_blink": check_video}
    for role, name in inputs.items():
        try:
            checks[role](folder / name)
        except InputError as e:
            raise InputError(f"{role}: {str(e).replace(str(folder / name) + ': ', '')}") from None
