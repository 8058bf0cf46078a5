import numpy as np
import pytest

from talkinghead.errors import NoFaceError
from talkinghead.face.crop import crop_box, crop_image
from talkinghead.face.extract import extract_motion, motion_from_face
from talkinghead.face.landmarker import analyze_portrait
from talkinghead.face.mesh import canonical_mesh
from talkinghead.face.pose import euler_to_matrix, matrix_to_euler, similarity_fit
from talkinghead.face.regions import eye_aspect_ratio
from talkinghead.types import BS


def test_canonical_mesh_from_task_bundle():
    mesh = canonical_mesh()
    assert mesh.vertices.shape == (468, 3) and mesh.triangles.shape == (898, 3)
    assert mesh.triangles.min() == 0 and mesh.triangles.max() == 467
    v = mesh.vertices
    assert v[1, 2] > v[234, 2]            # nose tip nearer the viewer than the ear
    assert v[10, 1] > v[152, 1]           # forehead above chin (y up)
    assert v[33, 0] < 0 < v[263, 0]       # subject's right eye on the image's left
    assert np.linalg.norm(v[33] - v[263]) == pytest.approx(8.9, abs=0.3)  # cm


@pytest.mark.parametrize("angles", [(10, 0, 0), (0, -15, 0), (0, 0, 25), (12, -7, 30)])
def test_euler_round_trip(angles):
    np.testing.assert_allclose(matrix_to_euler(euler_to_matrix(*angles)), angles, atol=1e-4)


def test_similarity_fit_recovers_transform():
    rng = np.random.default_rng(0)
    p = rng.normal(size=(50, 3))
    r = euler_to_matrix(20, -10, 5)
    s, r_hat, t = similarity_fit(p, 3.0 * p @ r.T + [1, 2, 3])
    assert s == pytest.approx(3.0, rel=1e-5)
    np.testing.assert_allclose(r_hat, r, atol=1e-5)
    np.testing.assert_allclose(t, [1, 2, 3], atol=1e-4)


def test_portrait_analysis(portrait_face):
    f = portrait_face
    assert f.landmarks.shape == (478, 3) and f.blendshapes.shape == (52,)
    assert f.matrix.shape == (4, 4) and 100 < f.size < 300
    m = motion_from_face(f)
    assert len(m) == 1 and m.blink.shape == (1, 2)
    assert np.all(m.ear > 0.15)  # the astronaut's eyes are open
    assert abs(m.rotation[0]).max() < 25


def test_largest_of_several_faces_with_warning(portrait, landmarker, caplog):
    import cv2

    small = cv2.resize(portrait, (420, 420))
    group = np.full((512, 1024, 3), 255, np.uint8)
    group[:, :512] = portrait
    group[46:466, 560:980] = small
    with caplog.at_level("WARNING", logger="talkinghead"):
        face = analyze_portrait(group, "group.png", landmarker)
    assert "2 faces" in caplog.text
    assert face.bbox[2] < 512  # the big one, on the left


def test_no_face_and_tiny_face(portrait, landmarker):
    import cv2

    with pytest.raises(NoFaceError, match="blank.png: no face"):
        analyze_portrait(np.full((256, 256, 3), 200, np.uint8), "blank.png", landmarker)
    tiny = np.full((200, 200, 3), 128, np.uint8)
    tiny[35:165, 35:165] = cv2.resize(portrait, (130, 130), interpolation=cv2.INTER_AREA)
    with pytest.raises(NoFaceError, match="too small"):
        analyze_portrait(tiny, "tiny.png", landmarker)


def test_eye_aspect_ratio_drops_when_lids_meet(portrait_face):
    lm = portrait_face.landmarks.copy()
    open_ear = eye_aspect_ratio(lm)
    from talkinghead.face import regions as R
    for up, lo in ((R.LEFT_EYE_UPPER, R.LEFT_EYE_LOWER),):
        lm[list(up[1:-1])] = lm[list(lo[1:-1])]
    closed = eye_aspect_ratio(lm)
    assert closed[0] < 0.05 < open_ear[0] and closed[1] == pytest.approx(open_ear[1])


def test_crop_box_square_around_face(portrait, portrait_face):
    x0, y0, x1, y1 = crop_box(portrait_face)
    assert x1 - x0 == y1 - y0
    fx0, fy0, fx1, fy1 = portrait_face.bbox
    assert x0 < fx0 and y0 < fy0 and x1 > fx1 and y1 > fy1
    assert crop_image(portrait, (x0, y0, x1, y1), 256).shape == (256, 256, 3)
    assert crop_image(portrait, (-50, -50, 100, 100), 64).shape == (64, 64, 3)  # padded


def test_extract_video_motion(carphone_path):
    m = extract_motion(carphone_path, progress=False)
    assert len(m) == 120 and abs(m.fps - 29.97) < 0.01 and m.valid.all()
    jaw = m.channel("jawOpen")
    assert jaw.max() > 0.5 and jaw.min() < 0.05   # he talks
    assert (m.blink.mean(1) > 0.4).sum() >= 2      # and blinks


def test_extract_cli_writes_npz(tmp_path, portrait_path):
    from conftest import run_cli
    from talkinghead.types import Motion

    out = tmp_path / "m.npz"
    r = run_cli("extract", portrait_path, "-o", out, "-q")
    assert r.returncode == 0, r.stderr
    m = Motion.load(out)
    assert len(m) == 1 and m.blendshapes[0, BS["mouthSmileLeft"]] > 0.5
