import numpy as np
import pytest

from talkinghead.face import regions as R
from talkinghead.render.eyes import close_eyelid, make_eyelid
from talkinghead.render.geometric import GeometricRenderer, RenderConfig
from talkinghead.render.rig import ExpressionRig
from talkinghead.render.tps import tps_backward
from talkinghead.types import BS, Motion


def rel(**kw) -> Motion:
    m = Motion(np.zeros((1, 52)), np.zeros((1, 3)), np.zeros((1, 3)), np.ones(1),
               np.zeros((1, 2)), relative=True)
    for k, v in kw.items():
        if k in BS:
            m.blendshapes[0, BS[k]] = v
        else:
            m.rotation[0, ("yaw", "pitch", "roll").index(k)] = v
    return m


def test_tps_identity_and_interpolation():
    rng = np.random.default_rng(0)
    pts = rng.uniform(0, 1, (30, 2))
    grid = rng.uniform(0, 1, (100, 2))
    np.testing.assert_allclose(tps_backward(pts, pts, grid, 0.0), grid, atol=1e-5)
    shift = tps_backward(pts, pts + [0.1, -0.05], grid, 0.0)  # a translation is reproduced
    np.testing.assert_allclose(shift, grid + [0.1, -0.05], atol=1e-5)
    src = pts + rng.normal(0, 0.02, pts.shape)
    hit = tps_backward(pts, src, pts.astype(np.float32), 0.0)  # interpolates its controls
    np.testing.assert_allclose(hit, src, atol=1e-3)


def test_rig_jaw_opens_lower_face_only():
    rig = ExpressionRig()
    d = rig.deform(np.eye(52)[BS["jawOpen"]])
    assert d[14, 1] > 1.0 and d[152, 1] > 1.0          # lower lip and chin go down (cm)
    assert np.abs(d[list(R.LIPS_INNER_UPPER[1:-1])]).max() < 1e-6  # upper lip stays
    assert np.abs(d[[33, 263, 1, 10]]).max() < 1e-6     # eyes, nose, forehead stay
    np.testing.assert_allclose(rig.deform(np.zeros(52)), 0.0)


def test_rig_sides_and_directions():
    rig = ExpressionRig()
    smile = rig.deform(np.eye(52)[BS["mouthSmileLeft"]])
    assert smile[291, 0] > 0.2 and smile[291, 1] < -0.2   # subject's left corner: out and up
    assert np.abs(smile[61]).max() < 0.05                 # right corner barely moves
    brows = rig.deform(np.eye(52)[BS["browInnerUp"]])
    assert brows[107, 1] < -0.3
    pucker = rig.deform(np.eye(52)[BS["mouthPucker"]])
    assert pucker[291, 0] < -0.2 and pucker[61, 0] > 0.2  # corners move in


def test_eyelid_closes_over_the_eye(portrait, portrait_face):
    lid = make_eyelid(portrait_face.landmarks, R.LEFT_EYE_UPPER, R.LEFT_EYE_LOWER, portrait.shape[:2])
    work = portrait.copy()
    close_eyelid(work, portrait, lid, 0.0)
    assert (work == portrait).all()
    close_eyelid(work, portrait, lid, 1.0)
    x0, y0, x1, y1 = lid.box
    iris = portrait_face.landmarks[473:478, :2].mean(0)  # subject's left iris centre
    ix, iy = int(round(iris[0])), int(round(iris[1]))
    # the iris is darker than skin; closed, that pixel shows lid skin (brighter)
    assert work[iy, ix].mean() > portrait[iy, ix].mean() + 25
    outside = np.ones(portrait.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    assert (work[outside] == portrait[outside]).all()


@pytest.fixture(scope="module")
def renderer_state(portrait, portrait_face):
    r = GeometricRenderer()
    return r, r.prepare(portrait, portrait_face)


def test_zero_motion_reproduces_source(renderer_state, portrait):
    r, st = renderer_state
    out = r.render(st, rel())
    assert out.shape == portrait.shape
    assert np.abs(out.astype(int) - portrait).mean() < 0.5


def test_background_untouched_outside_region(renderer_state, portrait):
    r, st = renderer_state
    out = r.render(st, rel(jawOpen=0.6, yaw=12, roll=-8, eyeBlinkLeft=1.0))
    mask = st.region_mask()
    assert 0.1 < mask.mean() < 0.9
    assert (out[~mask] == portrait[~mask]).all()
    assert np.abs(out[mask].astype(int) - portrait[mask]).mean() > 1.0  # it did animate


def test_render_requires_relative_motion(renderer_state):
    r, st = renderer_state
    m = rel()
    m.relative = False
    with pytest.raises(ValueError, match="relative"):
        r.render(st, m)


def test_face_model_reads_back_rendered_motion(renderer_state, landmarker):
    """Pose, jaw and blink requested from the renderer are what the face model measures."""
    from talkinghead.face.extract import motion_from_face

    r, st = renderer_state
    base = motion_from_face(landmarker.detect(r.render(st, rel()))[0])
    for kw, check in [(dict(yaw=10), lambda d: abs(d.rotation[0, 0] - 10) < 3),
                      (dict(pitch=-8), lambda d: abs(d.rotation[0, 1] + 8) < 3),
                      (dict(roll=15), lambda d: abs(d.rotation[0, 2] - 15) < 3),
                      (dict(jawOpen=0.6), lambda d: d.channel("jawOpen")[0] > 0.15),
                      (dict(eyeBlinkLeft=1, eyeBlinkRight=1), lambda d: d.blink.min() > 0.25)]:
        got = motion_from_face(landmarker.detect(r.render(st, rel(**kw)))[0]).relative_to(base)
        assert check(got), (kw, got.rotation, got.channel("jawOpen"), got.blink)


def test_calibration_makes_response_monotone(portrait, portrait_face, landmarker):
    r = GeometricRenderer(RenderConfig())
    st = r.prepare(portrait, portrait_face)
    r.calibrate(st, landmarker)
    assert set(st.response) == {"jawOpen", "eyeBlink"}
    levels = r._rig_level(st, "jawOpen", np.array([0.05, 0.1, 0.2, 0.3]))
    assert np.all(np.diff(levels) > 0) and levels[-1] <= st.response["jawOpen"][0][-1]


def test_lip_press_seals_lips_parted_in_the_source(renderer_state, landmarker):
    """Bilabials: mouthPress closes the inner-lip gap, even where the portrait shows teeth."""
    from talkinghead.face.regions import mouth_opening

    _, st = renderer_state
    r = GeometricRenderer(RenderConfig(seal_gain=2.5))
    rest = mouth_opening(landmarker.detect(r.render(st, rel()))[0].landmarks)
    pressed = mouth_opening(landmarker.detect(
        r.render(st, rel(mouthPressLeft=0.4, mouthPressRight=0.4)))[0].landmarks)
    assert rest > 0.1 and pressed < 0.8 * rest
    mesh, _ = r.dest_points(st, rel(mouthPressLeft=0.4, mouthPressRight=0.4))
    assert abs(mesh[13, 1] - mesh[14, 1]) < 0.05 * abs(st.landmarks[13, 1] - st.landmarks[14, 1]) + 0.5
