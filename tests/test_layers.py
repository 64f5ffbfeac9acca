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
                 "color", "regions", "texture", "memory", "tiling", "batch", "distributed"):
        text = (core / f"{name}.py").read_text()
        assert "print(" not in text and "sys.exit" not in text, name
