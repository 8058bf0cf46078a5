"""The renderer interface (render/base.py): registry by name, the built-in renderers follow the
protocol, and GeneratePipeline drives any registered renderer without knowing its type."""

import numpy as np
import pytest

from talkinghead.errors import InputError
from talkinghead.render import base
from talkinghead.render.base import RenderInputs, RenderOptions, Renderer, get_renderer, register, renderer_names
from talkinghead.types import Motion

from conftest import run_cli


def _motion(n: int, jaw: float = 0.0) -> Motion:
    from talkinghead.types import BS

    b = np.zeros((n, 52), np.float32)
    b[:, BS["jawOpen"]] = np.linspace(0, jaw, n)
    return Motion(b, np.zeros((n, 3)), np.zeros((n, 3)), np.ones(n), np.zeros((n, 2)), relative=True)


def test_registry_names_and_unknown_name():
    assert {"geometric", "dawn", "sadtalker"} <= set(renderer_names())
    with pytest.raises(InputError, match="unknown renderer 'nope'; choose one of geometric"):
        get_renderer("nope")


def test_learned_renderers_say_which_checkpoint_they_need():
    with pytest.raises(InputError, match="needs --dawn-checkpoint"):
        get_renderer("dawn")
    with pytest.raises(InputError, match="needs --sadtalker-checkpoints"):
        get_renderer("sadtalker")


def test_geometric_renderer_streams_what_render_draws(portrait, portrait_face):
    r = get_renderer("geometric", RenderOptions())
    assert isinstance(r, Renderer) and r.name == "geometric" and not r.crops_itself
    state = r.prepare(portrait, portrait_face)
    motion = _motion(3, jaw=0.8)
    frames = list(r.frames(state, motion, RenderInputs(progress=False)))
    assert len(frames) == 3 and frames[0].shape == portrait.shape
    assert np.abs(frames[0].astype(int) - portrait).mean() < 0.5  # zero motion: the source
    assert np.abs(frames[2].astype(int) - portrait).max() > 30   # an open jaw changes pixels
    assert np.array_equal(frames[2], r.render(state, motion[2]))
    assert r.paste(state, frames[1]) is frames[1]


def test_geometric_prepare_calibrates_the_channels_it_was_built_with(portrait, portrait_face, landmarker):
    plain = get_renderer("geometric").prepare(portrait, portrait_face, landmarker)
    fitted = get_renderer("geometric", RenderOptions(calibrate=("eyeBlink",))).prepare(
        portrait, portrait_face, landmarker)
    assert plain.response == {} and set(fitted.response) == {"eyeBlink"}


class _TintRenderer:
    """A renderer registered from outside: tints the face box by how far the jaw is open."""

    name = "tint"
    crops_itself = True

    def __init__(self, options: RenderOptions) -> None:
        self.options, self.prepared, self.clip_seconds = options, 0, None

    def prepare(self, image, face, landmarker=None):
        self.prepared += 1
        x0, y0 = face.landmarks[:, :2].min(0).astype(int)
        x1, y1 = face.landmarks[:, :2].max(0).astype(int)
        return image, (x0, y0, x1, y1)

    def frames(self, state, motion, inputs):
        from talkinghead.types import BS

        self.clip_seconds = inputs.clip.duration
        image, (x0, y0, x1, y1) = state
        for t in range(len(motion)):
            crop = image[y0:y1, x0:x1].copy()
            crop[..., 0] = np.clip(crop[..., 0] + 200 * motion.blendshapes[t, BS["jawOpen"]], 0, 255)
            yield self.paste(state, crop)

    def paste(self, state, crop):
        image, (x0, y0, x1, y1) = state
        out = image.copy()
        out[y0:y1, x0:x1] = crop
        return out


def test_pipeline_drives_a_registered_renderer_without_knowing_it(tmp_path, portrait_path, speech_path):
    from talkinghead.io.video import iter_frames
    from talkinghead.pipelines.generate import GenerateConfig, GeneratePipeline

    built = []
    register("tint", lambda o: built.append(_TintRenderer(o)) or built[-1])
    try:
        pipe = GeneratePipeline(GenerateConfig(renderer="tint", crop_size=256))
        out = pipe(portrait_path, speech_path, tmp_path / "tint.mp4", progress=False)
    finally:
        base._REGISTRY.pop("tint")
    r = built[0]
    assert r.options.crop_size == 256 and r.prepared == 1 and abs(r.clip_seconds - 4.0) < 0.5
    frames = list(iter_frames(out.path))
    assert len(frames) == out.num_frames == len(out.motion)
    assert frames[0].shape == out.portrait.image.shape         # full portrait: crops_itself
    jaw = out.motion.channel("jawOpen")
    red = np.array([f[..., 0].astype(float).mean() for f in frames])
    assert np.corrcoef(jaw, red)[0, 1] > 0.9                   # its frames, in order, were encoded


def test_cli_rejects_unknown_renderer(tmp_path, portrait_path, speech_path):
    r = run_cli("generate", "--image", portrait_path, "--audio", speech_path, "-o", tmp_path / "x.mp4", "--renderer", "nope")
    assert r.returncode == 2 and "invalid choice: 'nope'" in r.stderr
    assert not (tmp_path / "x.mp4").exists()
