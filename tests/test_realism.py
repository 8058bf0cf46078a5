"""Issue #10: teeth, tongue and cavity behind occluding lips; teeth from real photographs; lash
line, crease and gaze in the eyes."""

import numpy as np
import pytest

from talkinghead.face import regions as R
from talkinghead.render.eyes import GAZE_U, close_eyelid, make_eyelid
from talkinghead.render.mouth import mouth_style, paint_mouth
from talkinghead.render.teeth import COLS, ROWS, MouthBank, MouthTexture, mouth_frame
from talkinghead.types import BS


def open_jaw(landmarks: np.ndarray, frac: float, lift: float = 0.0) -> np.ndarray:
    """Landmarks with the lower lip (inner and outer) dropped by `frac` of the mouth width and
    the upper lip raised by `lift` of it."""
    m = landmarks.copy()
    w = np.linalg.norm(m[78, :2] - m[308, :2])
    lo = list(set(R.LIPS_INNER_LOWER[1:-1] + R.LIPS_OUTER_LOWER[1:-1]))
    up = list(set(R.LIPS_INNER_UPPER[1:-1] + R.LIPS_OUTER_UPPER[1:-1]))
    m[lo, 1] += frac * w
    m[up, 1] -= lift * w
    return m


def interior_samples(mesh: np.ndarray, depths: tuple[float, ...]) -> list[tuple[int, int]]:
    """Pixels at the mouth's middle, `depths` (share of the gap) below the upper inner lip."""
    mf = mouth_frame(mesh)
    up, lo = mf.lines(np.array([0.5]))
    out = []
    for t in depths:
        p = mf.origin + 0.5 * mf.width * mf.axis + (up[0] + t * (lo[0] - up[0])) * mf.normal
        out.append((int(round(p[1])), int(round(p[0]))))
    return out


def test_teeth_under_upper_lip_cavity_between_lips_occlude(portrait, portrait_face):
    lm = portrait_face.landmarks
    style = mouth_style(portrait, lm, bank=False, own=False)  # the plain stand-in texture
    mesh = open_jaw(lm, 0.35)
    frame = portrait.copy()
    paint_mouth(frame, mesh, 0.0, style)
    (ty, tx), (cy, cx), (gy, gx) = interior_samples(mesh, (0.08, 0.35, 0.75))
    assert frame[ty, tx].mean() > 150                       # teeth right under the upper lip
    assert frame[cy, cx].mean() < 0.6 * frame[ty, tx].mean()  # dark cavity further down
    tongue = frame[gy, gx].astype(int)
    assert tongue[0] > tongue[1] + 10 and tongue.mean() < frame[ty, tx].mean()  # red, in shadow
    # lips occlude: nothing changes outside the inner-lip polygon (beyond a 2 px antialias rim)
    import cv2

    poly = np.concatenate([mesh[list(R.LIPS_INNER_UPPER), :2],
                           mesh[list(R.LIPS_INNER_LOWER[-2:0:-1]), :2]])
    mask = np.zeros(portrait.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(poly).astype(np.int32)], 1)
    mask = cv2.dilate(mask, np.ones((5, 5), np.uint8))
    changed = np.abs(frame.astype(int) - portrait.astype(int)).sum(2) > 0
    assert changed.any() and not (changed & (mask == 0)).any()


def test_exemplar_warped_onto_contour_in_portrait_colours(portrait, portrait_face):
    """A texture whose colour codes its column lands left to right along the target mouth, in
    colours relative to the portrait's skin."""
    lm = portrait_face.landmarks
    ramp = np.zeros((ROWS, COLS, 3), np.float32)
    ramp[..., 0] = np.linspace(0.2, 1.2, COLS)[None, :]      # red rises corner to corner
    ramp[..., 1:] = 0.7
    tex = MouthTexture(ramp, np.full(COLS, 0.6, np.float32), 0.6, 0.0, "ramp")
    style = mouth_style(portrait, lm, bank=MouthBank((tex,)), own=False)
    assert style.own is None and len(style.bank) == 1
    mesh = open_jaw(lm, 0.3)
    frame = portrait.copy()
    paint_mouth(frame, mesh, 0.0, style)
    mf = mouth_frame(mesh)
    up, lo = mf.lines(np.array([0.3, 0.7]))
    reds = []
    for a, u, l_ in zip((0.3, 0.7), up, lo):
        p = mf.origin + a * mf.width * mf.axis + (u + 0.1 * (l_ - u)) * mf.normal
        reds.append(int(frame[int(round(p[1])), int(round(p[0])), 0]))
    assert reds[1] > reds[0] + 30
    # a relative colour of 0.7 becomes 0.7 x the portrait's own skin (times the lip shadow)
    from talkinghead.render.teeth import face_reference

    ref = face_reference(portrait, lm)
    green = frame[int(round(p[1])), int(round(p[0])), 1]
    assert 0.35 * ref[1] < green < 0.75 * ref[1]


@pytest.fixture(scope="module")
def smiling_frame(landmarker):
    """A real frame showing teeth: the laughing woman of the bank clip, frame 296."""
    from talkinghead.assets import asset_path
    from talkinghead.io.video import iter_frames

    for i, f in enumerate(iter_frames(asset_path("WolfgangLanger_Pexels.mp4"))):
        if i == 296:
            return f, landmarker.detect(f)[0].landmarks
    raise AssertionError("clip too short")


def test_sample_portrait_keeps_its_own_teeth(portrait, portrait_face):
    assert mouth_style(portrait, portrait_face.landmarks).own is not None   # she smiles


def test_own_teeth_kept_with_the_skull(smiling_frame):
    """A portrait showing teeth keeps its own: as the jaw drops and the upper lip rises, the
    upper teeth stay where the skull holds them, and the gap below them opens into the mouth."""
    image, lm = smiling_frame
    style = mouth_style(image, lm)
    assert style.own is not None and style.own.origin == "portrait"
    mf = mouth_frame(lm)
    up, lo = mf.lines(np.array([0.5]))
    # a point on the upper teeth in the source (a quarter into the gap)
    p = mf.origin + 0.5 * mf.width * mf.axis + (up[0] + 0.25 * (lo[0] - up[0])) * mf.normal
    y, x = int(round(p[1])), int(round(p[0]))
    mesh = open_jaw(lm, 0.3, lift=0.04)
    frame = image.copy()
    paint_mouth(frame, mesh, 0.0, style)
    patch = (slice(y - 1, y + 2), slice(x - 2, x + 3))
    assert np.abs(frame[patch].astype(int) - image[patch].astype(int)).mean() < 12
    (cy, cx), = interior_samples(mesh, (0.62,))
    assert frame[cy, cx].mean() < image[y, x].mean() - 40   # opened: darker than the teeth


@pytest.mark.slow
def test_bank_from_real_footage_checksummed_with_provenance():
    import json

    from talkinghead.render.teeth import _bank_paths, _sha256, load_bank

    bank = load_bank()
    assert bank is not None and len(bank.textures) >= 5
    npz, meta = _bank_paths()
    info = json.loads(meta.read_text())
    assert info["sha256"] == _sha256(npz) and info["source"]["clip"] == "WolfgangLanger_Pexels.mp4"
    assert all(f.startswith("WolfgangLanger_Pexels.mp4#frame") for f in info["frames"])
    openings = sorted(t.opening for t in bank.textures)
    assert openings[-1] > openings[0] + 0.05                 # spread over mouth shapes
    widest = max(bank.textures, key=lambda t: t.opening)
    assert bank.pick(widest.opening + 0.01, widest.smile) is widest
    for t in bank.textures:                                  # teeth: bright under the upper lip
        top = t.tex[2:6, COLS // 3: 2 * COLS // 3].mean()
        assert top > 1.0, t.origin                            # brighter than the face's skin


def test_closed_lid_shows_lash_line_and_crease(portrait, portrait_face):
    lid = make_eyelid(portrait_face.landmarks, R.LEFT_EYE_UPPER, R.LEFT_EYE_LOWER, portrait.shape[:2])
    work = portrait.copy()
    close_eyelid(work, portrait, lid, 1.0)
    x0, y0, x1, y1 = lid.box
    grey = work[y0:y1, x0:x1].astype(np.float32).mean(2)
    mid = (lid.u > 0.3 * lid.width) & (lid.u < 0.7 * lid.width)
    v_closed = lid.v_lower
    lash = mid & (lid.v > v_closed - 0.05 * lid.width) & (lid.v < v_closed)
    skin = mid & (lid.v > v_closed - 0.35 * lid.width) & (lid.v < v_closed - 0.15 * lid.width)
    assert grey[lash].mean() < grey[skin].mean() - 25         # a dark lash line on the margin
    assert grey[skin].std() < 25                              # over smooth lid skin


def test_gaze_moves_the_iris_not_the_lids(portrait, portrait_face):
    lid = make_eyelid(portrait_face.landmarks, R.LEFT_EYE_UPPER, R.LEFT_EYE_LOWER, portrait.shape[:2])
    x0, y0, x1, y1 = lid.box
    open_eye = (lid.v > lid.v_upper + 1) & (lid.v < lid.v_lower - 1) & (lid.inside > 0.99)

    def iris_x(img: np.ndarray) -> float:
        grey = img[y0:y1, x0:x1].astype(np.float32).mean(2)
        dark = open_eye & (grey < np.percentile(grey[open_eye], 25))
        return float(np.mean(np.nonzero(dark)[1]))

    b = np.zeros(52, np.float32)
    b[BS["eyeLookOutLeft"]] = 0.6                           # subject's left = image right
    work = portrait.copy()
    close_eyelid(work, portrait, lid, 0.0, b)
    shift = iris_x(work) - iris_x(portrait)
    assert 0.3 * GAZE_U * 0.6 * lid.width < shift < 1.5 * GAZE_U * 0.6 * lid.width
    outside = ~((lid.v > lid.v_upper) & (lid.v < lid.v_lower))
    diff = np.abs(work[y0:y1, x0:x1].astype(int) - portrait[y0:y1, x0:x1].astype(int)).sum(2)
    assert diff[outside].max() == 0                          # lids and skin untouched


def test_portrait_blur_estimate_grows_with_blur(portrait, portrait_face):
    import cv2

    from talkinghead.render.mouth import portrait_blur

    lm = portrait_face.landmarks
    sharp = portrait_blur(portrait, lm)
    soft = portrait_blur(cv2.GaussianBlur(portrait, (0, 0), 2.0), lm)
    assert 0.0 <= sharp < soft - 0.3


def head_move(yaw: float = 0.0, tx: float = 0.0):
    from talkinghead.types import Motion

    return Motion(np.zeros((1, 52)), np.array([[yaw, 0.0, 0.0]]), np.array([[tx, 0.0, 0.0]]),
                  np.ones(1), np.zeros((1, 2)), relative=True)


def test_head_turn_moves_head_over_still_background(portrait, portrait_face):
    """A large turn moves head and hair over a still background: background pixels away from
    the head stay exactly the source (the plain warp drags them), and what the head uncovers
    is filled with background colours, not head colours."""
    import cv2

    from talkinghead.render.geometric import GeometricRenderer, RenderConfig

    r = GeometricRenderer()
    fg0 = r.prepare(portrait, portrait_face).backdrop.mask > 0.5
    # a striped wall behind the astronaut, so that a dragged background shows
    image = portrait.copy()
    stripes = np.where((np.arange(image.shape[1]) // 6) % 2, 230, 40).astype(np.uint8)
    wall = ~cv2.dilate(fg0.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
    wall[int(portrait_face.landmarks[152, 1]):] = False                 # above the chin only
    image[wall] = np.broadcast_to(stripes[None, :, None], image.shape)[wall]
    st = r.prepare(image, portrait_face)
    bd = st.backdrop
    x0, y0, x1, y1 = st.box
    fg = bd.mask > 0.5
    oval = portrait_face.landmarks[list(R.FACE_OVAL), :2]
    inside = np.zeros(fg.shape, np.uint8)
    cv2.fillPoly(inside, [np.round(oval).astype(np.int32)], 1)
    inside = inside > 0
    assert fg[inside].mean() > 0.99 and (fg & wall).sum() < 0.03 * wall.sum()
    plain = GeometricRenderer(RenderConfig(still_background=False))
    plain_st = plain.prepare(image, portrait_face)
    # no motion: what the plain warp gives (the source, up to the mouth painter's rim)
    assert (r.render(st, head_move()) == plain.render(plain_st, head_move())).all()
    move = head_move(yaw=25.0, tx=3.0)
    out = r.render(st, move)
    # the head moves right: the wall up to 40 px left of it is never covered
    cols = np.arange(fg.shape[1])[None, :]
    edge = np.where(fg.any(1), fg.argmax(1), -1)[:, None]               # first head column
    far = wall & (cols < edge) & (cols >= edge - 40)
    far[:y0], far[y1:], far[:, :x0], far[:, x1:] = False, False, False, False
    assert far.sum() > 2000
    assert (out[far] == image[far]).all()
    dragged = plain.render(plain_st, move)
    assert (np.abs(dragged[far].astype(int) - image[far]).sum(1) > 60).mean() > 0.05
    # uncovered: head in the source, background plate now (not the warped head)
    plate = np.zeros_like(image)
    plate[y0:y1, x0:x1] = bd.plate
    uncovered = fg & ~inside & (np.abs(out.astype(int) - plate).sum(2) < 6) & (
        np.abs(plate.astype(int) - image).sum(2) > 30)
    assert uncovered.sum() > 200
    ring = (cv2.dilate(fg.astype(np.uint8), np.ones((15, 15), np.uint8)) > 0) & ~fg
    ring[int(portrait_face.landmarks[152, 1]):] = False                  # next to the head
    got = out[uncovered].mean(0)
    assert np.linalg.norm(got - image[ring].mean(0)) < np.linalg.norm(got - image[inside].mean(0))


def test_lower_lip_drop_set_apart_from_upper_lip_raise():
    """mouthLowerDown drops the lower lip by lip_lower_cm, mouthUpperUp raises the upper one by
    lip_raise_cm (both sides together, at the midline), each leaving the other lip alone."""
    from talkinghead.render.rig import ExpressionRig, RigConfig

    rig = ExpressionRig(RigConfig(lip_raise_cm=0.8, lip_lower_cm=0.3))
    down, up = np.zeros(52), np.zeros(52)
    down[[BS["mouthLowerDownLeft"], BS["mouthLowerDownRight"]]] = 1.0
    up[[BS["mouthUpperUpLeft"], BS["mouthUpperUpRight"]]] = 1.0
    d, u = rig.deform(down), rig.deform(up)
    assert d[14, 1] == pytest.approx(0.3, abs=0.02) and abs(d[13, 1]) < 1e-6
    assert u[13, 1] == pytest.approx(-0.8, abs=0.02) and abs(u[14, 1]) < 1e-6
    same = ExpressionRig(RigConfig(lip_raise_cm=0.8)).deform(down)      # None: as the upper lip
    assert same[14, 1] == pytest.approx(0.8, abs=0.02)
