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
    """The library raises; only the front ends print and exit: every module outside cli/ and
    __main__.py (the web app serves and logs, it never prints either)."""
    import re
    from pathlib import Path

    import restyle

    core = Path(restyle.__file__).parent
    modules = [p for p in core.rglob("*.py") if p.relative_to(core).parts[0] not in ("cli", "__main__.py")]
    assert len(modules) > 40
    for path in modules:
        text = path.read_text()
        assert not re.search(r"\bprint\(|\bsys\.exit\b", text), path.relative_to(core)
