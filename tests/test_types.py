import numpy as np
import pytest

from talkinghead.types import BLENDSHAPE_NAMES, BS, Motion


def make_motion(t: int = 10, fps: float = 25.0, seed: int = 0) -> Motion:
    rng = np.random.default_rng(seed)
    return Motion(blendshapes=rng.uniform(0, 1, (t, 52)), rotation=rng.normal(0, 5, (t, 3)),
                  translation=rng.normal(0, 1, (t, 3)), scale=rng.uniform(0.5, 1, t),
                  ear=rng.uniform(0.1, 0.4, (t, 2)), fps=fps)


def test_blendshape_names_are_mediapipe_order():
    assert len(BLENDSHAPE_NAMES) == 52 and BLENDSHAPE_NAMES[0] == "_neutral"
    assert BS["jawOpen"] == 25 and BS["eyeBlinkLeft"] == 9


def test_shape_validation():
    with pytest.raises(ValueError, match="rotation"):
        Motion(np.zeros((3, 52)), np.zeros((3, 2)), np.zeros((3, 3)), np.ones(3), np.zeros((3, 2)))


def test_save_load_round_trip(tmp_path):
    m = make_motion()
    m.valid[3] = False
    m.save(tmp_path / "m.npz")
    back = Motion.load(tmp_path / "m.npz")
    for name in ("blendshapes", "rotation", "translation", "scale", "ear", "valid"):
        np.testing.assert_array_equal(getattr(back, name), getattr(m, name))
    assert back.fps == m.fps and not back.relative


def test_relative_to_source_is_delta():
    m = make_motion()
    rel = m.relative_to(m[0])
    assert rel.relative
    np.testing.assert_allclose(rel.blendshapes[0], 0, atol=1e-7)
    np.testing.assert_allclose(rel.rotation, m.rotation - m.rotation[0], atol=1e-5)
    np.testing.assert_allclose(rel.scale[0], 1.0)
    with pytest.raises(ValueError):
        rel.relative_to(m[0])


def test_scaled_and_slicing():
    rel = make_motion().relative_to(make_motion(seed=1)[0])
    half = rel.scaled(expression=0.5, pose=0.0)
    np.testing.assert_allclose(half.blendshapes, rel.blendshapes * 0.5, rtol=1e-6)
    assert np.all(half.rotation == 0) and np.all(half.scale == 1)
    assert len(rel[2:5]) == 3 and len(rel[4]) == 1


def test_resample_keeps_duration_and_values():
    m = make_motion(t=30, fps=30.0)
    m.rotation[:, 0] = np.linspace(0, 29, 30)  # 1 degree per frame at 30 fps
    r = m.resample(25.0)
    assert len(r) == 25 and r.fps == 25.0
    np.testing.assert_allclose(r.rotation[:, 0], np.arange(25) * 30 / 25, atol=1e-4)
