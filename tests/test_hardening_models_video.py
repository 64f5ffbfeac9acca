"""Issue 27 (hardening, round three): what a day of hostile use found in video runs, the hybrid and
model files, each as a test that failed before the fix.

A failed video run's work folder, the hybrid's flags and sidecar, model listings that print
what a file says (escaped) and check that each model would load.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from restyle.cli import main
from restyle.errors import InputError

sys.path.insert(0, str(Path(__file__).parent))

ROOT = Path(__file__).resolve().parents[1]


# --- 10. a failed video run leaves no work folder that blocks the corrected rerun --------------


@pytest.fixture
def clip(tmp_path):
    pytest.importorskip("av")
    pytest.importorskip("cv2")
    from videoutil import make_clip

    return make_clip(tmp_path / "clip.mp4")  # 10 frames at 10 fps, with audio


def test_video_run_without_frames_leaves_no_work_folder(clip, tmp_path, capsys):
    out = tmp_path / "s11.mp4"
    assert main(["video", str(clip), "--model", "starry_night", "-o", str(out), "--size", "48",
                 "--start", "0.99", "--quiet"]) == 2
    assert "no frames" in capsys.readouterr().err
    assert not (tmp_path / "s11.mp4.frames").exists()
    assert main(["video", str(clip), "--model", "starry_night", "-o", str(out), "--size", "48", "--quiet"]) == 0
    assert out.is_file() and not (tmp_path / "s11.mp4.frames").exists()


def test_work_folder_with_a_manifest_but_no_frame_is_taken_over(clip, tmp_path):
    """A folder an older restyle left behind after such a failure holds nothing to resume."""
    from restyle.video import NetworkFrames, VideoConfig, stylize_video

    net = lambda x: x  # noqa: E731
    work = tmp_path / "o.mp4.frames"
    work.mkdir()
    (work / "manifest.json").write_text(json.dumps({"start": 0.99, "stylizer": {"other": 1}}))
    r = stylize_video(clip, tmp_path / "o.mp4", NetworkFrames(net, 0.0), VideoConfig(size=48))
    assert r.frames == 10 and not work.exists()


def test_failed_run_keeps_a_given_work_folder_but_not_its_manifest(clip, tmp_path):
    from restyle.video import NetworkFrames, VideoConfig, stylize_video

    mine = tmp_path / "mine"
    mine.mkdir()
    with pytest.raises(InputError, match="no frames"):
        stylize_video(clip, tmp_path / "o.mp4", NetworkFrames(lambda x: x, 0.0), VideoConfig(size=48, start=0.99),
                      work_dir=mine)
    assert mine.is_dir() and not any(mine.iterdir())
