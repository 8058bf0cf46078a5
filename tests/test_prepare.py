"""`prepare` resumes by source, however the folder is spelled (relative or absolute)."""
import json
import os

from talkinghead.data.prepare import PrepareConfig, prepare


def test_prepare_resumes_the_same_sources_from_a_relative_or_absolute_path(tmp_path, monkeypatch):
    src = tmp_path / "videos"
    src.mkdir()
    (src / "broken.mp4").write_bytes(b"not a video")
    (src / "empty.mov").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    first = prepare("videos", tmp_path / "out", PrepareConfig(), workers=1, progress=False)
    second = prepare(os.fspath(src), tmp_path / "out", PrepareConfig(), workers=1, progress=False)
    assert len(first["skipped"]) == 2
    assert len(second["skipped"]) == 2          # not four: nothing is prepared twice
    lines = (tmp_path / "out" / "prepare.jsonl").read_text().splitlines()
    assert len(lines) == 2
    assert {json.loads(line)["status"] for line in lines} == {"skipped"}
