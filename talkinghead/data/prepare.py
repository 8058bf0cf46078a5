"""Dataset preparation for the learned renderers (DAWN, dawn.txt Sec. 4 "datasets": HDTF and
CREMA videos are face-cropped, resized and resampled to 25 fps before training).

`prepare(src, out)`: every talking video under `src` (any layout; mp4/avi/mov/mkv/webm) becomes
one shard directory `out/shards/<id>/` of plain .npy arrays that training memory-maps, so
batches stream from disk:

  frames.npy     (T, S, S, 3) uint8   face crop at 25 fps; one fixed box per video (the median of
                                       the tracked face boxes), as HDTF-style crops are
  masks.npy      (T, S, S) uint8      bit 0: face (inside the face oval), bit 1: lips (outer lip
                                       contour, dilated), from the face model's landmarks
  motion.npz                           the per-frame Motion (blendshapes, pose, blink, EAR)
  audio.npy      (N,) float32         16 kHz mono
  features.npy   (T, D) float16       audio features per video frame (Whisper-base by default)
  info.json                            source, fps, size, frames, feature kind, face coverage

Videos are processed in parallel worker processes. A shard is written to a temporary name and
renamed when complete, and every source gets one line in `out/prepare.jsonl` (ok, or skipped
with the reason: unreadable, no audio, too short, no face), so a rerun resumes where it stopped
and a bad video never stops the run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from talkinghead.errors import InputError, NoFaceError, TalkingHeadError
from talkinghead.io.video import VIDEO_SUFFIXES

log = logging.getLogger("talkinghead")
FACE_BIT, LIP_BIT = 1, 2


@dataclass
class PrepareConfig:
    size: int = 128                # crop side in pixels
    fps: float = 25.0
    expand: float = 1.6            # crop box / face landmark box
    min_seconds: float = 1.0
    min_face_share: float = 0.5    # skip when the face is found in fewer frames
    features: str = "whisper"      # audio features: whisper | mel


def source_id(path: Path, root: Path) -> str:
    rel = str(path.relative_to(root))
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in path.stem)[:40]
    return f"{stem}-{hashlib.sha1(rel.encode()).hexdigest()[:8]}"


def find_sources(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)


def _polygon_mask(points: np.ndarray, size: int, dilate: int = 0) -> np.ndarray:
    import cv2

    mask = np.zeros((size, size), np.uint8)
    cv2.fillPoly(mask, [np.round(points).astype(np.int32)], 1)
    if dilate:
        mask = cv2.dilate(mask, np.ones((2 * dilate + 1,) * 2, np.uint8))
    return mask


def region_masks(landmarks: np.ndarray, size: int) -> np.ndarray:
    """(size, size) uint8: FACE_BIT inside the face oval, LIP_BIT on the (dilated) outer lips."""
    from talkinghead.face.regions import FACE_OVAL, LIPS_OUTER_LOWER, LIPS_OUTER_UPPER

    face = _polygon_mask(landmarks[list(FACE_OVAL), :2], size)
    lips = np.concatenate([landmarks[list(LIPS_OUTER_UPPER), :2],
                           landmarks[list(LIPS_OUTER_LOWER[::-1]), :2]])
    lip = _polygon_mask(lips, size, dilate=max(1, size // 64))
    return (face * FACE_BIT) | (lip * LIP_BIT)


def _frame_times(num: int, src_fps: float, fps: float) -> np.ndarray:
    """Source frame index for each output frame (nearest in time)."""
    n_out = int(np.floor(num / src_fps * fps + 1e-6))
    return np.minimum(np.round(np.arange(n_out) * src_fps / fps).astype(int), num - 1)


def _track(path: Path) -> tuple[list, float]:
    """The face found in each frame (None where none) and the source fps; frames not kept."""
    from talkinghead.face.landmarker import FaceLandmarker
    from talkinghead.io.video import iter_frames, video_info

    info = video_info(path)
    faces = []
    with FaceLandmarker(video=True) as lm:
        for i, frame in enumerate(iter_frames(path)):
            found = lm.detect(frame, timestamp_ms=int(round(i * 1000.0 / info.fps)))
            faces.append(found[0] if found else None)
    return faces, info.fps


def _crops(path: Path, pick: np.ndarray, box, size: int) -> np.ndarray:
    """(len(pick), size, size, 3) crops of the picked source frames (a second decode)."""
    from talkinghead.face.crop import crop_image
    from talkinghead.io.video import iter_frames

    out = np.zeros((len(pick), size, size, 3), np.uint8)
    wanted: dict[int, list[int]] = {}
    for j, i in enumerate(pick):
        wanted.setdefault(int(i), []).append(j)
    for i, frame in enumerate(iter_frames(path)):
        for j in wanted.get(i, ()):
            out[j] = crop_image(frame, box, size)
    return out


def _median_box(faces: list, expand: float) -> tuple[int, int, int, int]:
    from talkinghead.face.crop import crop_box

    boxes = np.array([crop_box(f, expand) for f in faces if f is not None], np.float64)
    cx, cy = np.median((boxes[:, 0] + boxes[:, 2]) / 2), np.median((boxes[:, 1] + boxes[:, 3]) / 2)
    half = np.median(boxes[:, 2] - boxes[:, 0]) / 2
    return int(round(cx - half)), int(round(cy - half)), int(round(cx + half)), int(round(cy + half))


def prepare_video(path: Path, out: Path, cfg: PrepareConfig) -> dict:
    """One source video -> one shard directory `out` (written whole or not at all)."""
    from talkinghead.face.extract import fill_missing, motion_from_face
    from talkinghead.io.audio import read_audio
    from talkinghead.io.video import video_info

    info = video_info(path)
    if not info.has_audio:
        raise InputError("no audio track")
    if info.num_frames and info.num_frames / info.fps < cfg.min_seconds:
        raise InputError(f"too short ({info.num_frames / info.fps:.2f} s)")
    clip = read_audio(path)
    faces, src_fps = _track(path)
    pick = _frame_times(len(faces), src_fps, cfg.fps)
    pick = pick[: int(clip.duration * cfg.fps)]
    if len(pick) < cfg.min_seconds * cfg.fps:
        raise InputError(f"too short ({len(pick) / cfg.fps:.2f} s with audio)")
    faces = [faces[i] for i in pick]
    share = float(np.mean([f is not None for f in faces]))
    if share < cfg.min_face_share:
        raise NoFaceError(f"no face in {100 * (1 - share):.0f}% of frames")
    box = _median_box(faces, cfg.expand)
    x0, y0, x1, y1 = box
    scale = cfg.size / (x1 - x0)
    crops = _crops(path, pick, box, cfg.size)
    masks, last = [], None
    for f in faces:
        if f is not None:
            last = region_masks((f.landmarks[:, :2] - [x0, y0]) * scale, cfg.size)
        masks.append(last if last is not None else np.zeros((cfg.size,) * 2, np.uint8))
    first = next(i for i, m in enumerate(faces) if m is not None)
    masks[:first] = [masks[first]] * first
    motion = fill_missing([motion_from_face(f) if f is not None else None for f in faces],
                           cfg.fps, str(path))
    feats = _extractor(cfg.features)(clip, cfg.fps).values[: len(pick)]
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    np.save(tmp / "frames.npy", crops)
    np.save(tmp / "masks.npy", np.stack(masks))
    motion.save(tmp / "motion.npz")
    np.save(tmp / "audio.npy", clip.mono().astype(np.float32)[: int(len(pick) / cfg.fps * 16000)])
    np.save(tmp / "features.npy", np.asarray(feats, np.float16))
    meta = {"source": str(path), "frames": len(pick), "fps": cfg.fps, "size": cfg.size,
            "box": list(box), "face_share": share, "features": cfg.features,
            "feature_dim": int(np.asarray(feats).shape[1])}
    (tmp / "info.json").write_text(json.dumps(meta))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return meta


def _worker(job: tuple[str, str, dict]) -> dict:
    path, out, cfg = job
    cfg = PrepareConfig(**cfg)
    record = {"source": path, "shard": Path(out).name}
    try:
        meta = prepare_video(Path(path), Path(out), cfg)
        record.update(status="ok", frames=meta["frames"])
    except TalkingHeadError as e:
        record.update(status="skipped", reason=str(e))
    except Exception as e:  # noqa: BLE001 - one bad file must not stop a dataset run
        record.update(status="skipped", reason=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    return record


_EXTRACTORS: dict = {}


def _extractor(kind: str):
    """One audio feature extractor per process, loaded on first use."""
    if kind not in _EXTRACTORS:
        from talkinghead.audio.features import get_extractor

        _EXTRACTORS[kind] = get_extractor(kind)
    return _EXTRACTORS[kind]


def _init_worker() -> None:
    """Worker processes share the cores: one torch thread each."""
    import torch

    torch.set_num_threads(1)


def prepare(src: str | Path, out: str | Path, cfg: PrepareConfig = PrepareConfig(),
            workers: int = 2, progress: bool = True) -> dict:
    """Prepare every video under `src` into `out`; returns the manifest (also out/manifest.json)."""
    import multiprocessing as mp

    from tqdm import tqdm

    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise InputError(f"{src}: not a folder of videos")
    sources = find_sources(src)
    if not sources:
        raise InputError(f"{src}: no videos ({', '.join(sorted(VIDEO_SUFFIXES))})")
    (out / "shards").mkdir(parents=True, exist_ok=True)
    logfile = out / "prepare.jsonl"
    done = {}
    if logfile.exists():
        for line in logfile.read_text().splitlines():
            r = json.loads(line)
            if r["status"] == "skipped" or (out / "shards" / r["shard"] / "info.json").exists():
                done[r["shard"]] = r   # the shard id, unlike the path string, is the same
    jobs = [(str(p), str(out / "shards" / source_id(p, src)), asdict(cfg))   # for rel/abs src
            for p in sources if source_id(p, src) not in done]
    ctx = mp.get_context("spawn")
    pool = ctx.Pool(workers, initializer=_init_worker) if workers > 1 and len(jobs) > 1 else None
    with open(logfile, "a") as logf, tqdm(total=len(sources), initial=len(sources) - len(jobs),
                                          desc="preparing", unit="video", disable=not progress) as bar:
        results = pool.imap_unordered(_worker, jobs) if pool else map(_worker, jobs)
        for r in results:
            logf.write(json.dumps(r) + "\n")
            logf.flush()
            done[r["shard"]] = r
            if r["status"] != "ok":
                log.warning("skipped %s: %s", r["source"], r["reason"])
            bar.update(1)
    if pool:
        pool.close()
        pool.join()
    ok = [r for r in done.values() if r["status"] == "ok"]
    manifest = {"config": asdict(cfg), "videos": len(ok), "frames": int(sum(r["frames"] for r in ok)),
                "skipped": {r["source"]: r["reason"] for r in done.values() if r["status"] != "ok"},
                "shards": sorted(r["shard"] for r in ok)}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest
