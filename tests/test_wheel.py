"""Issue 27, item 18: restyle as a user installs it, from its wheel, not from the checkout.

The wheel is built from a copy of the source (pyproject.toml, README.md, src/), installed with
pip into a folder of its own, and run from a folder with no checkout above it: the web app must
find its example images (package data, through importlib.resources) and `restyle models` its
bundled models, as `make serve` does from the checkout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a wheel build and an install: several seconds

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ("restyle/examples/tubingen.jpg", "restyle/examples/starry_night.jpg", "restyle/examples/the_scream.jpg",
           "restyle/models/bundled/starry_night.pt", "restyle/models/bundled/starry_night.json",
           "restyle/models/bundled/up4.pt", "restyle/web/templates/index.html", "restyle/web/static/style.css",
           "restyle/web/static/job.js", "restyle/report/template.html")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    build = tmp_path_factory.mktemp("wheel")
    tree = build / "restyle-src"
    tree.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tree / name)
    shutil.copytree(ROOT / "src", tree / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(build / "dist"), str(tree)], check=True, timeout=300, capture_output=True)
    return next((build / "dist").glob("restyle-*.whl"))


def test_the_wheel_holds_the_examples_models_and_web_files(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [n for n in SHIPPED if n not in names]
    assert not missing, missing
    assert not any("__pycache__" in n or n.startswith(("tests/", "examples/")) for n in names)


INSTALLED = r"""
import json, sys
from pathlib import Path
import restyle
from fastapi.testclient import TestClient
from restyle.cli.main import main
from restyle.web.app import create_app
from restyle.web.gallery import examples
from restyle.web.settings import Settings

s = Settings(data_dir=Path(sys.argv[1]), weights=sys.argv[2], start_workers=False, gallery=False)
contents, styles = examples(s)
with TestClient(create_app(s)) as c:
    index, models = c.get("/").text, c.get("/models").text
    picture = c.get("/examples/starry_night")
main(["models"])
print(json.dumps({"package": restyle.__file__, "examples_dir": str(s.examples_dir), "photos_dir": s.photos_dir,
                  "contents": [e.key for e in contents], "styles": [e.key for e in styles],
                  "index_offers": [k for k in ("tubingen", "starry_night", "the_scream") if f"/examples/{k}" in index],
                  "no_examples_said": "No example images" in index, "models_page_says": "--photos" in models,
                  "picture": [picture.status_code, picture.headers.get("content-type")]}))
"""


def test_the_installed_app_finds_its_examples_and_bundled_models(wheel, tmp_path, tiny_weights):
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(site),
                    str(wheel)], check=True, timeout=300, capture_output=True)
    away = tmp_path / "elsewhere"  # no checkout (no pyproject.toml) above the working folder or the package
    away.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(site)
    p = subprocess.run([sys.executable, "-c", INSTALLED, str(tmp_path / "data"), str(tiny_weights)], cwd=away,
                       env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    *listing, last = p.stdout.strip().splitlines()
    got = json.loads(last)
    assert got["package"].startswith(str(site)), got["package"]  # the installed copy, not the checkout
    assert got["examples_dir"].startswith(str(site))
    assert got["contents"] == ["tubingen"] and {"starry_night", "the_scream", "shipwreck"} <= set(got["styles"])
    assert got["index_offers"] == ["tubingen", "starry_night", "the_scream"] and not got["no_examples_said"]
    assert got["picture"] == [200, "image/jpeg"]
    assert got["photos_dir"] is None and got["models_page_says"]  # no photos: the page says how to give some
    rows = {line.split()[0]: line for line in listing}
    assert "style starry_night" in rows["starry_night"] and "upscaler x4" in rows["up4"]
    assert not any("unreadable" in line for line in listing), listing
