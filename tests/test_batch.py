"""The local batch loop: paint_pair()'s skip, failure and atomic-write rules (no Ray needed)."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from restyle.batch.local import PairTask, is_complete, pair_key, paint_pair, run_batch
from restyle.cli.main import main
from restyle.config import StylizeConfig
from restyle.optimiser.engine import make_painter, run

CFG = StylizeConfig(size=80, iterations=2, scales=(40, 80))


def folder_of_photos(tmp_path, small_images):
    c, s = small_images
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.open(c).save(photos / "a.png")
    Image.open(c).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(photos / "b.png")
    (photos / "c.jpg").write_bytes(b"\xff\xd8 truncated")
    out = tmp_path / "out"
    out.mkdir()
    return photos, s, out


def test_bad_input_fails_alone_and_a_rerun_skips_complete_outputs(small_images, tiny_weights, tmp_path, capsys):
    photos, s, out = folder_of_photos(tmp_path, small_images)
    args = ["stylize", str(photos), str(s), "-o", str(out), "--weights", str(tiny_weights),
            "--iterations", "2", "--size", "80", "--scales", "40,80"]
    assert main(args) == 2  # the corrupt photo is bad input; the two good ones are painted
    err = capsys.readouterr().err
    assert "2 painted, 0 complete already, 1 failed" in err
    assert "failed: c.jpg x s.png:" in err and "c.jpg: not an image file" in err
    assert sorted(p.name for p in out.iterdir()) == ["a__s.png", "a__s.png.json", "b__s.png", "b__s.png.json"]
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}

    assert main(args) == 2
    assert "0 painted, 2 complete already, 1 failed" in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps

    # Another setting, or an output whose bytes no longer match its sidecar, is painted again.
    Image.new("RGB", (80, 64)).save(out / "b__s.png")
    assert main(args + ["--seed", "1"]) == 2
    assert "2 painted, 0 complete already" in capsys.readouterr().err
    assert json.loads((out / "a__s.png.json").read_text())["config"]["seed"] == 1


def test_paint_pair_cleans_a_killed_attempts_leftovers_and_records_the_node(small_images, tiny_weights, tmp_path):
    c, s = small_images
    out = tmp_path / "r.png"
    (tmp_path / ".r.png.abc123.tmp").write_bytes(b"half a png")  # what a killed save_atomic leaves
    painter = make_painter(CFG, tiny_weights)
    task = PairTask(0, c, s, out)
    o = paint_pair(task, CFG, painter, weights=tiny_weights, node={"host": "here", "pid": 1}, attempt=2)
    assert o.status == "done" and o.attempts == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.png", "r.png", "r.png.json", "s.png"]
    side = json.loads((tmp_path / "r.png.json").read_text())
    assert side["node"] == {"host": "here", "pid": 1} and side["attempt"] == 2
    assert is_complete(task, pair_key(task, CFG, painter.key))
    assert not is_complete(task, pair_key(task, CFG.replace(seed=3), painter.key))
    # Without a sidecar nothing vouches for the output: it is painted again.
    assert paint_pair(task, CFG, painter, weights=tiny_weights, sidecar=False).status == "done"


def test_run_batch_reports_progress_for_the_whole_batch(small_images, tiny_weights, tmp_path):
    photos, s, out = folder_of_photos(tmp_path, small_images)
    (photos / "c.jpg").unlink()
    events = []
    report = run_batch([photos], [s], out, CFG, weights=tiny_weights, callback=events.append)
    assert [o.status for o in report.outcomes] == ["done", "done"] and report.exit_code == 0
    done = [e.done for e in events if type(e).__name__ == "BatchProgress"]
    assert done == sorted(done) and done[-1] == 2 and 0 < done[0] < 1
    assert [e.label for e in events if type(e).__name__ == "PairStarted"] == ["a.png x s.png", "b.png x s.png"]


def test_restyle_runs_without_ray():
    """Ray is imported only when a Ray batch runs: the CLI and distributed.py load without it."""
    code = ("import sys; sys.modules['ray'] = None; import restyle.cli.main, restyle.batch.local, restyle.batch.distributed; "
            "print('ok')")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "ok\n"


def _tinted(src, rgb, path):
    a = np.asarray(Image.open(src).convert("RGB"), dtype=np.float32)
    Image.fromarray((a * 0.5 + np.array(rgb, np.float32) * 0.5).astype(np.uint8)).save(path)
    return path


@pytest.mark.parametrize("mode", ["histogram", "luminance"])
def test_batch_result_equals_the_single_run_when_the_style_is_recoloured_per_photo(small_images, tiny_weights,
                                                                                  tmp_path, mode):
    """Regression: batch mode cached the style's Grams by (path, size, layers), but with
    --preserve-colors the style is recoloured to each photo first; the second photo got the
    first photo's recoloured style. Its batch result must equal its own single run."""
    c, s = small_images
    photos = tmp_path / "photos"
    photos.mkdir()
    _tinted(c, (255, 40, 0), photos / "a.png")
    b = _tinted(c, (0, 60, 255), photos / "b.png")
    out = tmp_path / "out"
    out.mkdir()
    cfg = StylizeConfig(size=64, iterations=3, scales=(1,), precision="fp32", preserve_colors=mode)
    painter = make_painter(cfg, tiny_weights)
    report = run_batch([photos], [s], out, cfg, weights=tiny_weights, painter=painter)
    assert [o.status for o in report.outcomes] == ["done", "done"]
    single = run(b, [s], cfg, weights=tiny_weights)
    batch_b = np.asarray(Image.open(out / "b__s.png"), dtype=np.int16)
    assert np.abs(batch_b - np.asarray(single.image, dtype=np.int16)).max() == 0
    # Both photos' recoloured styles were computed: nothing was wrongly shared.
    assert painter.cache.misses == 2 and painter.cache.hits == 0


def test_batch_shares_a_style_that_is_not_recoloured(small_images, tiny_weights, tmp_path):
    c, s = small_images
    photos = tmp_path / "photos"
    photos.mkdir()
    _tinted(c, (255, 40, 0), photos / "a.png")
    _tinted(c, (0, 60, 255), photos / "b.png")
    out = tmp_path / "out"
    out.mkdir()
    cfg = StylizeConfig(size=64, iterations=2, scales=(1,), precision="fp32")
    painter = make_painter(cfg, tiny_weights)
    run_batch([photos], [s], out, cfg, weights=tiny_weights, painter=painter)
    assert painter.cache.misses == 1 and painter.cache.hits == 1


# ---- the one Ray driver (batch/driver.py), against a stand-in for Ray: no cluster needed ----------


class _Task:
    def __init__(self, index):
        self.index, self.label = index, f"t{index}"


class _FakeRay:
    """ray.wait/get/exceptions as the Driver uses them; a call's fate is decided when it is sent."""

    class exceptions:
        class RayError(Exception):
            pass

        class RayTaskError(RayError):
            pass

        class RayActorError(RayError):
            pass

    def wait(self, refs, num_returns, timeout):
        return refs[:1], refs[1:]

    def get(self, ref):
        if isinstance(ref, BaseException):
            raise ref
        return ref


class _Board:
    def __init__(self):
        self.starts, self.attempts = [], {}
        self.poll = type("Method", (), {"remote": lambda _, running: (self.take(), {})})()

    def start(self, index, pid):
        self.attempts[index] = self.attempts.get(index, 0) + 1
        self.starts.append((index, self.attempts[index], "here", pid))

    def take(self):
        starts, self.starts = self.starts, []
        return starts


class _Actor:
    """fates (shared): task index -> "dies" (Ray restarts its worker and runs it again) or "retires" (Ray gives
    up on its worker); each fate strikes the first run of the task only."""

    def __init__(self, board, pid, fates):
        self.board, self.pid, self.fates, self.ran, self.retired = board, pid, fates, [], False
        self.run = type("Method", (), {"remote": lambda _, task: self.call(task)})()

    def call(self, task):
        self.board.start(task.index, self.pid)
        fate = self.fates.pop(task.index, None)
        if fate == "retires":
            self.retired = True
            return _FakeRay.exceptions.RayActorError("gone")
        if fate == "dies":
            self.pid += 1000  # the restarted process
            self.board.start(task.index, self.pid)
        self.ran.append(task.index)
        return f"result {task.index}"


def test_driver_requeues_a_lost_workers_task_and_counts_each_loss_once():
    from restyle.batch.driver import Driver
    from restyle.events import PairStarted

    board = _Board()
    fates = {1: "retires", 2: "dies"}
    a, b = _Actor(board, 1, fates), _Actor(board, 2, fates)
    events = []
    driver = Driver(_FakeRay(), [a, b], board, emit=events.append, noun="chunk", verb="making")
    for i in range(4):
        driver.put(_Task(i))
    results = {}
    while driver.pending:
        results.update((task.index, r) for task, r in driver.step())

    assert results == {i: f"result {i}" for i in range(4)}
    gone, other = (a, b) if a.retired else (b, a)
    assert gone.retired and not other.retired and 1 in other.ran  # the retired worker's task went to the other
    assert sorted((e.index, e.attempt) for e in events if isinstance(e, PairStarted) and e.attempt > 1) == [(1, 2), (2, 2)]
    assert len(driver.lost) == 2, driver.lost  # one line per lost run, however it was seen
    assert any(f"pid {gone.pid} on here died making t1 (attempt 1); RayActorError, worker retired, chunk queued"
               in line for line in driver.lost)
    assert any("died making t2 (attempt 1); ran it again" in line for line in driver.lost)


def test_driver_gives_up_after_max_attempts_and_stops_when_every_worker_is_lost():
    from restyle.batch.driver import MAX_ATTEMPTS, Driver, Failed
    from restyle.errors import ResourceError

    board = _Board()
    board.attempts[0] = MAX_ATTEMPTS - 1  # the task's earlier runs killed their workers
    driver = Driver(_FakeRay(), [_Actor(board, 1, {0: "retires"})], board)
    driver.put(_Task(0))
    driver.put(_Task(1))
    (task, failed), = driver.step()
    assert task.index == 0 and isinstance(failed, Failed) and failed.attempts == MAX_ATTEMPTS
    assert failed.error == f"{MAX_ATTEMPTS} workers died running it"
    with pytest.raises(ResourceError, match=r"every Ray worker was lost; 1 task\(s\) left undone"):
        driver.step()
