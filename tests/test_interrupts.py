"""Ctrl-C and start-up of the `restyle` command (issue 15, item 5), in real subprocesses.

A SIGINT at any moment after restyle's first instruction exits 130 with one line
("restyle: interrupted"), never a traceback, never swallowed; `import restyle`,
`--help` and argument errors do not import torch.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
# What pip's console script runs (pyproject's [project.scripts] target, checked below).
CONSOLE_SCRIPT = "import sys; from restyle.__main__ import main; sys.exit(main())"
MESSAGE = "restyle: interrupted"


def _stylize_args(small_images, tiny_weights, out, iterations=100_000):
    c, s = small_images
    return ["stylize", str(c), str(s), "-o", str(out), "--weights", str(tiny_weights),
            "--size", "64", "--iterations", str(iterations)]


def _interrupt(cmd, after_s, wait_for=None, patience_s=120):
    """Start `cmd`, wait for `wait_for` on stderr (if given), sleep `after_s`, send SIGINT.

    Returns (exit code, stderr without -X importtime lines, seconds from SIGINT to exit).
    """
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV, cwd=ROOT)
    lines, seen = [], threading.Event()

    def read() -> None:
        for line in proc.stderr:
            lines.append(line)
            if wait_for is not None and wait_for in line:
                seen.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        if wait_for is not None and not seen.wait(patience_s):
            pytest.fail(f"never saw {wait_for!r} in {patience_s} s: {''.join(lines)[-2000:]}")
        time.sleep(after_s)
        t = time.monotonic()
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail("Ctrl-C was swallowed: still running 60 s later")
        took = time.monotonic() - t
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(10)
    err = "".join(line for line in lines if not line.startswith("import time:"))
    return proc.returncode, err, took


# -X importtime reports each import as it completes. restyle.interrupts is imported just
# before the entry point installs its handler, restyle.errors (by the CLI) just after: the
# delays count from that line, a few ms after restyle's first instruction, not from the
# process start (Python's own start-up, ~20-80 ms here, is Python's).
@pytest.mark.parametrize("delay", [0.0, 0.01, 0.05, 0.1, 0.3])
@pytest.mark.parametrize("entry", ["module", "console"])
def test_ctrl_c_at_start_up_exits_130_with_one_line(small_images, tiny_weights, tmp_path, delay, entry):
    out = tmp_path / "out.png"
    how = ["-m", "restyle"] if entry == "module" else ["-c", CONSOLE_SCRIPT]
    code, err, took = _interrupt([sys.executable, "-X", "importtime", *how,
                                  *_stylize_args(small_images, tiny_weights, out)],
                                 delay, wait_for="restyle.errors")
    assert code == 130, err
    assert err == MESSAGE + "\n"
    assert took < 10
    assert not out.exists()


# Counted from the process start, late enough for Python's own start-up even on a busy machine.
@pytest.mark.parametrize("delay", [0.5, 1.0, 2.0])
def test_ctrl_c_counted_from_the_process_start(small_images, tiny_weights, tmp_path, delay):
    code, err, _ = _interrupt([sys.executable, "-m", "restyle",
                               *_stylize_args(small_images, tiny_weights, tmp_path / "o.png")], delay)
    assert code == 130 and "Traceback" not in err, err
    assert err.rstrip().splitlines()[-1] == MESSAGE  # after the progress bar, if painting had begun


def test_ctrl_c_while_painting_stops_cleanly(small_images, tiny_weights, tmp_path):
    out = tmp_path / "out.png"
    code, err, took = _interrupt([sys.executable, "-m", "restyle",
                                  *_stylize_args(small_images, tiny_weights, out), "--save-every", "1000000"],
                                 0.5, wait_for="scale 1/")
    assert code == 130 and "Traceback" not in err, err
    assert err.rstrip().splitlines()[-1] == MESSAGE
    assert took < 10
    assert not out.exists() and not list(tmp_path.glob(".out.png.*"))  # no partial or temporary file


def _imported_after(code: str) -> set:
    probe = f"{code}\nimport sys\nprint(' '.join(m for m in ('torch', 'numpy', 'PIL') if m in sys.modules))"
    p = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=ENV, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    return set(p.stdout.split())


def test_import_restyle_loads_no_torch_until_a_public_name_is_used():
    assert _imported_after("import restyle; restyle.__version__; restyle.StylizeConfig(size=64)") == set()
    assert _imported_after("import restyle; restyle.events.Iterate; restyle.InputError; restyle.Cancelled") == set()
    assert "torch" in _imported_after("import restyle; restyle.stylize")


@pytest.mark.parametrize("argv", [["--help"], ["stylize", "--help"], ["stylize", "a.jpg", "b.jpg", "-o", "x.png", "--size", "10"],
                                  ["stylize", "a.jpg", "b.jpg", "-o", "x.png", "--style-blend-weights", "-1,2"],
                                  ["presets"]])
def test_help_and_argument_errors_do_not_import_torch(argv):
    code = ("import sys, runpy\n"
            f"sys.argv = ['restyle', *{argv!r}]\n"
            "try:\n    runpy.run_module('restyle', run_name='__main__')\n"
            "except SystemExit as e:\n    assert e.code in (0, 2), e.code\n")
    assert "torch" not in _imported_after(code)


def test_console_script_is_the_entry_point_that_handles_ctrl_c():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["restyle"] == "restyle.__main__:main"


# --- issue 27, item 1: Ctrl-C during a training writes its checkpoint --------------------------------


@pytest.fixture
def train_photos(tmp_path):
    """Five small photos cut from the example (one held aside by the commands below)."""
    from PIL import Image

    d = tmp_path / "photos"
    d.mkdir()
    src = Image.open(ROOT / "examples" / "tubingen.jpg").convert("RGB").resize((96, 72))
    for i in range(5):
        src.crop((i * 8, i * 4, i * 8 + 48, i * 4 + 40)).save(d / f"p{i}.png")
    return d


def _train_argv(command, photos, weights, out, checkpoint_every):
    common = ["--photos", str(photos), "-o", str(out), "--weights", str(weights), "--steps", "100000",
              "--batch-size", "2", "--preview-every", "0", "--checkpoint-every", str(checkpoint_every)]
    if command == "train":
        return ["train", str(ROOT / "examples" / "starry_night.jpg"), *common, "--size", "32", "--style-size", "48",
                "--holdout", "1", "--widths", "4,8", "--res-blocks", "1", "--precision", "fp32", "--threads", "1"]
    return ["train-upscaler", *common, "--channels", "4", "--blocks", "1", "--crop", "16", "--scale", "2",
            "--hold-out", "1"]


@pytest.mark.slow
@pytest.mark.parametrize("command", ["train", "train-upscaler"])
@pytest.mark.parametrize("checkpoint_every", [0, 100_000])
def test_ctrl_c_during_training_writes_the_checkpoint(train_photos, tiny_weights, tmp_path, command, checkpoint_every):
    from restyle.networks.training import checkpoint_path

    out = tmp_path / "m.pt"
    code, err, took = _interrupt([sys.executable, "-m", "restyle",
                                  *_train_argv(command, train_photos, tiny_weights, out, checkpoint_every)],
                                 1.5, wait_for="training on")
    ckpt = checkpoint_path(out)
    assert code == 130 and "Traceback" not in err, err
    last = err.rstrip().splitlines()[-1]
    assert last.startswith(MESSAGE + ": training stopped at step ") and f"checkpoint {ckpt}" in last, err
    assert "--resume" in last and took < 30
    assert ckpt.is_file() and not out.exists()
    stopped = int(last.split("at step ")[1].split()[0])
    # --resume continues from there: two more steps, then the model file.
    argv = _train_argv(command, train_photos, tiny_weights, out, 0)
    argv[argv.index("--steps") + 1] = str(stopped + 2)
    p = subprocess.run([sys.executable, "-m", "restyle", *argv, "--resume", "--quiet"], capture_output=True, text=True,
                       env=ENV, cwd=ROOT, timeout=300)
    assert p.returncode == 0, p.stderr
    assert out.is_file()
