import subprocess
import sys


def test_core_import_loads_no_front_end():
    """`import restyle` must not pull in a web server or the CLI (torch itself imports tqdm)."""
    code = (
        "import sys, restyle; "
        "bad = [m for m in ('fastapi', 'uvicorn', 'starlette', 'restyle.cli', 'restyle.web') if m in sys.modules]; "
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def test_core_modules_never_print_or_exit():
    from pathlib import Path

    import restyle

    core = Path(restyle.__file__).parent
    for name in ("config", "errors", "events", "images", "weights", "features", "losses", "schedule", "engine",
                 "color", "regions", "texture", "memory", "tiling", "batch", "distributed", "device", "loop",
                 "objective", "models/vgg", "models/layers"):
        text = (core / f"{name}.py").read_text()
        assert "print(" not in text and "sys.exit" not in text, name


def test_imports_point_down():
    """pyproject.toml's import-linter contract: front ends above the engine, the engine above its parts."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    lint = Path(sys.executable).parent / "lint-imports"
    p = subprocess.run([str(lint), "--no-cache"], cwd=root, capture_output=True, text=True,
                       env={"PYTHONPATH": str(root / "src"), "PATH": "/usr/bin:/bin"})
    assert p.returncode == 0 and "1 kept, 0 broken" in p.stdout, p.stdout[-2000:] + p.stderr
