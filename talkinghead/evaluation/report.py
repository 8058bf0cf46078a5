"""The evaluation report: `metrics.json` with every figure, and `report.md` / `report.html` with
a table and, per video, a plot of mouth opening vs the audio's viseme track, head-pose traces
and a blink raster, so a person sees at a glance where a video goes wrong.

`check_in_browser` opens the HTML in headless Chromium and says which plots it displayed.
"""

from __future__ import annotations

import html
import json
import math
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from talkinghead.errors import OutputError
from talkinghead.evaluation.runner import Curves, EvalResult

# (key, column title, format); the order of the table
COLUMNS = (
    ("lse_d", "LSE-D", ".2f"), ("lse_c", "LSE-C", ".2f"), ("lip_r", "lip r", ".2f"),
    ("lip_offset_frames", "offset", "d"), ("bilabial_hit_rate", "bilabials", ".0%"),
    ("pause_closed_rate", "pauses closed", ".0%"), ("csim_arcface", "CSIM ArcFace", ".3f"),
    ("csim_dlib", "CSIM dlib", ".3f"), ("psnr", "PSNR", ".2f"), ("ssim", "SSIM", ".3f"),
    ("lpips", "LPIPS", ".3f"), ("cpbd", "CPBD", ".3f"), ("blinks_per_second", "blinks/s", ".2f"),
    ("pose_std_deg", "pose std", ".2f"), ("beat_align", "BAS", ".3f"),
)
DATASET = (("fid", "FID", ".2f"), ("fvd16", "FVD16", ".1f"), ("fvd32", "FVD32", ".1f"),
           ("efid", "E-FID", ".4f"))


def _json_value(v):
    if isinstance(v, (float, np.floating)):
        v = float(v)
        return None if math.isnan(v) else ("inf" if math.isinf(v) else round(v, 6))
    if isinstance(v, np.integer):
        return int(v)
    return v


def _fmt(v, spec: str) -> str:
    if isinstance(v, str):
        return "n/a" if v.startswith("not computed") else v
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    return format(int(v), spec) if spec == "d" else format(float(v), spec)


def plot_video(curves: Curves, title: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = np.arange(len(curves.opening)) / curves.fps
    fig, ax = plt.subplots(3, 1, figsize=(11, 7), sharex=True,
                           gridspec_kw={"height_ratios": [2, 2, 1]})
    ax[0].plot(t, curves.opening, lw=1.2, label="mouth opening (face model on the frames)")
    if curves.viseme is not None:
        v = curves.viseme * np.nanmax(curves.opening) / max(float(np.max(curves.viseme)), 1e-6)
        ax[0].plot(t, v, lw=1.0, alpha=0.8, label="viseme track of the audio (scaled)")
    ax[0].set_ylabel("inner-lip gap / width")
    ax[0].legend(loc="upper right", fontsize=8)
    for i, name in enumerate(("yaw", "pitch", "roll")):
        ax[1].plot(t, curves.rotation[:, i], lw=1.0, label=name)
    for b in curves.audio_beats:
        ax[1].axvline(b / curves.fps, color="0.8", lw=0.6, zorder=0)
    ax[1].plot(curves.motion_beats / curves.fps, curves.rotation[curves.motion_beats, 0], "k.", ms=3,
               label="motion beats (on yaw)")
    ax[1].set_ylabel("head pose (deg)")
    ax[1].legend(loc="upper right", fontsize=8, ncol=4)
    ax[2].plot(t, curves.blink, color="0.4", lw=0.8)
    for a, b in curves.blinks:
        ax[2].axvspan(a / curves.fps, b / curves.fps, color="tab:red", alpha=0.5)
    ax[2].set_ylabel("eyeBlink")
    ax[2].set_xlabel("seconds (grey lines: audio onsets; red: detected blinks)")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _markdown(result: EvalResult, plots: dict[str, str]) -> str:
    head = "| video | " + " | ".join(c[1] for c in COLUMNS) + " |"
    lines = ["# talkinghead evaluation", "", head, "|" + " --- |" * (len(COLUMNS) + 1)]
    for v in result.videos:
        lines.append(f"| {v.name} | " + " | ".join(_fmt(v.metrics.get(k), f) for k, _, f in COLUMNS) + " |")
    lines.append("| **mean** | " + " | ".join(_fmt(result.summary.get(k), f) for k, _, f in COLUMNS) + " |")
    lines += ["", "| " + " | ".join(d[1] for d in DATASET) + " |", "|" + " --- |" * len(DATASET),
              "| " + " | ".join(_fmt(result.dataset.get(k), f) for k, _, f in DATASET) + " |", ""]
    missing = sorted({v for v in [*result.summary.values(), *result.dataset.values()]
                      if isinstance(v, str) and v.startswith("not computed")})
    if missing:
        lines += ["n/a:", *[f"- {m}" for m in missing], ""]
    for v in result.videos:
        lines += [f"## {v.name}", "", f"![{v.name}]({plots[v.name]})", ""]
    return "\n".join(lines)


_CSS = """body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td:first-child{text-align:left}
.na{color:#999}img{max-width:100%;border:1px solid #ddd}.missing{color:#b00;font-weight:bold}"""
# marks each plot as shown or missing once the page has loaded (read back by check_in_browser)
_SCRIPT = """window.addEventListener('load',()=>{for(const im of document.images){
const ok=im.complete&&im.naturalWidth>0;im.dataset.shown=ok?'yes':'no';
if(!ok){const p=document.createElement('p');p.className='missing';
p.textContent='plot missing: '+im.getAttribute('src');im.after(p);}}});"""


def _cell(v, spec: str) -> str:
    text = _fmt(v, spec)
    title = f' title="{html.escape(v)}"' if isinstance(v, str) else ""
    return f'<td class="{"na" if text == "n/a" else ""}"{title}>{html.escape(text)}</td>'


def _html(result: EvalResult, plots: dict[str, str]) -> str:
    rows = ["<tr><th>video</th>" + "".join(f"<th>{c[1]}</th>" for c in COLUMNS) + "</tr>"]
    for v in result.videos:
        rows.append(f"<tr><td>{html.escape(v.name)}</td>"
                    + "".join(_cell(v.metrics.get(k), f) for k, _, f in COLUMNS) + "</tr>")
    rows.append("<tr><td><b>mean</b></td>"
                + "".join(_cell(result.summary.get(k), f) for k, _, f in COLUMNS) + "</tr>")
    ds = ("<tr>" + "".join(f"<th>{d[1]}</th>" for d in DATASET) + "</tr><tr>"
          + "".join(_cell(result.dataset.get(k), f) for k, _, f in DATASET) + "</tr>")
    figures = "".join(f'<h2>{html.escape(v.name)}</h2><img src="{html.escape(plots[v.name])}" '
                      f'alt="{html.escape(v.name)}">' for v in result.videos)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>talkinghead evaluation</title>"
            f"<style>{_CSS}</style><script>{_SCRIPT}</script></head><body>"
            f"<h1>talkinghead evaluation</h1><table>{''.join(rows)}</table>"
            f"<p>Over all videos:</p><table>{ds}</table>"
            f"<p class='na'>n/a: not computed (hover for what it needs)</p>{figures}</body></html>")


def to_json(result: EvalResult) -> dict:
    return {
        "videos": {v.name: {"path": v.path, "seconds": round(v.seconds, 3), "frames": v.frames,
                            **{k: _json_value(x) for k, x in v.metrics.items()}} for v in result.videos},
        "summary": {k: _json_value(x) for k, x in result.summary.items()},
        "dataset": {k: _json_value(x) for k, x in result.dataset.items()},
        "config": result.config,
    }


def write_report(result: EvalResult, out_dir: str | Path) -> Path:
    """Write metrics.json, report.md, report.html and plots/ into `out_dir` (replaced whole)."""
    out_dir = Path(out_dir)
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    except OSError as e:
        raise OutputError(f"{out_dir}: cannot write the report here ({e.strerror})") from None
    try:
        (tmp / "plots").mkdir()
        plots = {}
        for v in result.videos:
            plot_video(v.curves, v.name, tmp / "plots" / f"{v.name}.png")
            plots[v.name] = f"plots/{v.name}.png"
        (tmp / "metrics.json").write_text(json.dumps(to_json(result), indent=1))
        (tmp / "report.md").write_text(_markdown(result, plots))
        (tmp / "report.html").write_text(_html(result, plots))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def chromium() -> str | None:
    for name in ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    return None


def check_in_browser(page: str | Path, screenshot: str | Path | None = None) -> dict[str, bool]:
    """{plot src: shown} as headless Chromium loads `page`; optionally a screenshot."""
    import re

    browser = chromium()
    if browser is None:
        raise RuntimeError("no Chromium found (apt-get install chromium-headless-shell)")
    url = Path(page).resolve().as_uri()
    args = [browser, "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
            "--virtual-time-budget=5000"]
    dom = subprocess.run([*args, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    if screenshot:
        subprocess.run([*args, f"--screenshot={Path(screenshot).resolve()}", "--window-size=1200,1600",
                        url], capture_output=True, timeout=120)
    shown = {}
    for tag in re.findall(r"<img[^>]*>", dom):
        src = re.search(r'src="([^"]*)"', tag)
        flag = re.search(r'data-shown="([^"]*)"', tag)
        if src:
            shown[html.unescape(src.group(1))] = bool(flag and flag.group(1) == "yes")
    return shown
