"""Time left and time in all, by pixels x iterations across the scales (issue 15, items 9 and 13)."""

import io

import pytest

from restyle.optimiser import progress
from restyle.cli.common import Bar, _ProgressBar
from restyle.events import Estimate, Iterate, Planned, StageStart
from restyle.optimiser.schedule import pyramid

# The default 512 px run of a 4:3 photo: 110 steps at 256x192, then 28 at 512x384.
DEFAULT = ((256, 192, 110), (512, 384, 28))


def planned(stages=DEFAULT, peak=2**30, budget=8 * 2**30):
    return Planned(stages, progress.stage_pixels(stages), peak, budget)


def iterate(stages, step, elapsed):
    k, first = 0, 0
    while step > first + stages[k][2]:
        first += stages[k][2]
        k += 1
    w, h, n = stages[k]
    return Iterate(k, len(stages), w, h, step - first, n, step, sum(s[2] for s in stages), 1.0,
                   {"content": 1.0, "style": 2.0, "tv": 3.0}, elapsed)


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_bar_eta_counts_the_finer_scales_pixels():
    """At the end of the 256 px scale, 10 s in, 28 steps of 4x the pixels are left: ~10 s, not 2.5 s."""
    out, clock = io.StringIO(), Clock()
    bar = _ProgressBar(file=out, clock=clock)
    bar(planned())
    bar(StageStart(0, 2, 256, 192, 110))
    clock.now += 10.0
    bar(iterate(DEFAULT, 110, 11.0))
    status = bar.status(iterate(DEFAULT, 110, 11.0))
    assert "110/138 it [00:11<00:10," in status  # 10 s x (28 x 4) / 110 = 10.2 s
    bar(StageStart(1, 2, 512, 384, 28))
    clock.now += 5.0
    bar(iterate(DEFAULT, 124, 16.0))
    assert "124/138 it [00:16<00:05," in bar.status(iterate(DEFAULT, 124, 16.0))  # half of scale 2 done
    assert bar.bar.desc == "scale 2/2 512x384"
    assert "2 scale(s): 256x192 x 110, 512x384 x 28 iterations; peak memory about 1.0 GB" in out.getvalue()
    bar.close()


def test_bar_percentage_is_by_pixels_not_steps():
    out, clock = io.StringIO(), Clock()
    bar = _ProgressBar(file=out, clock=clock)
    bar(planned())
    bar(StageStart(0, 2, 256, 192, 110))
    bar(iterate(DEFAULT, 110, 1.0))
    assert bar.bar.n / bar.bar.total == pytest.approx(110 / (110 + 28 * 4))  # 50%, though 80% of the steps
    bar.close()


def test_eta_seconds_by_pixel_iterations():
    stages = progress.stage_pixels(DEFAULT)
    assert progress.eta_seconds(stages, 110, 10.0) == pytest.approx(10.0 * 28 * 4 / 110)
    assert progress.eta_seconds(stages, 138, 30.0) == 0
    assert progress.eta_seconds(stages, 0, 0.0) is None


def test_estimate_total_from_the_first_iterations_of_a_4000px_run():
    """--size 4000: timed on steps 1-4 at the 500 px scale, the 2000 and 4000 px scales dominate."""
    stages = tuple((round(s.long_side * 0.75) * s.long_side, s.iterations) for s in pyramid(4000, 110))
    assert [s.long_side for s in pyramid(4000, 110)] == [500, 1000, 2000, 4000]
    total = progress.estimate_total(stages, (1, 2.0), (4, 5.0))  # 1 s per 500 px iteration (a laptop CPU)
    per_pixel = 1.0 / stages[0][0]
    expected = 5.0 + per_pixel * (progress.work_done(stages, 178) - progress.work_done(stages, 4))
    assert total == pytest.approx(expected)
    assert total > progress.LONG_RUN_S
    assert progress.duration(total) == "30 min"  # 110 s of it at 500 px: the mean pace per step would say 3 min
    assert progress.estimate_total(stages, (4, 5.0), (4, 5.0)) is None


def test_network_pixels_pays_for_tile_margins():
    assert progress.network_pixels(2000, 1000) == 2_000_000
    assert progress.network_pixels(2000, 1000, tile=500, margin=64) == 4 * 2 * 628 * 628
    assert progress.network_pixels(400, 300, tile=512, margin=64) == 120_000


def test_run_estimate_sends_one_estimate_after_the_timed_steps_and_flags_long_runs(monkeypatch):
    events = []
    est = progress.RunEstimate(events.append)
    stages = ((500, 375, 110), (1000, 750, 28), (2000, 1500, 20), (4000, 3000, 20))
    est(planned(stages, peak=9 * 2**30, budget=12 * 2**30))
    for step, t in [(1, 3.0), (2, 4.0), (3, 5.0), (4, 6.0), (5, 7.0)]:
        est(iterate(stages, step, t))
    estimates = [e for e in events if isinstance(e, Estimate)]
    assert len(estimates) == 1 and events.index(estimates[0]) == 5  # right after step 4
    e = estimates[0]
    assert e.long and e.timed_to == 4 and e.peak_bytes == 9 * 2**30
    assert e.seconds == pytest.approx(progress.estimate_total(progress.stage_pixels(stages), (1, 3.0), (4, 6.0)))
    summary = est.summary()
    assert summary["total_s"] == round(e.seconds, 1) and summary["peak_memory_gb"] == 9.0


def test_long_run_warning_is_printed_even_when_quiet():
    out = io.StringIO()
    bar = _ProgressBar(show=False, file=out)
    bar(planned())
    assert out.getvalue() == ""
    bar(Estimate(3 * 3600.0, 2**30, 8 * 2**30, 4, True))
    assert out.getvalue() == ("restyle: warning: this run will take about 3 h 00 min; a smaller --size is much "
                              "faster (time grows with the pixels); Ctrl-C stops it\n")


def test_bar_prints_lines_before_it_opens_writes_them_above_it_and_closes_once():
    out = io.StringIO()
    with Bar(file=out) as bar:
        bar.write("before")
        tq = bar.open(total=2, unit="step")
        assert bar.bar is tq and tq.total == 2
        bar.write("during")
        tq.update(2)
    assert bar.bar is None
    bar.close()  # closing twice is harmless
    text = out.getvalue()
    assert text.startswith("before\n") and "during\n" in text and "2/2" in text
