# make demo: set up and stylize the bundled example.  make serve: the web app.  make test: set up and run every test.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_PIN := torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: install demo serve test browsers clean

install: $(STAMP)

# torch first, with an exact pin: an open range would pull several GB of CUDA packages.
$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PIN)
	$(PY) -m pip install -q -e '.[web,video,test,ray,onnx,bench]'
	touch $@

demo: install
	mkdir -p out
	$(VENV)/bin/restyle stylize examples/tubingen.jpg --model starry_night -o out/tubingen_starry_instant.png
	@echo "instant result (the bundled network, one pass): out/tubingen_starry_instant.png"
	$(VENV)/bin/restyle stylize examples/tubingen.jpg examples/starry_night.jpg -o out/tubingen_starry.png
	@echo "result: out/tubingen_starry.png (settings and timings: out/tubingen_starry.png.json)"

# The web app on http://127.0.0.1:8000/ (data in ~/.local/share/restyle); Ctrl-C stops it.
serve: install
	$(VENV)/bin/restyle serve

# Debian's chromium for the browser tests (no browser download from a test tool).
browsers:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

# lint-imports checks pyproject.toml's import-linter contract (front ends above the engine, ...).
test: install browsers
	PYTHONPATH=src $(VENV)/bin/lint-imports
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) out .pytest_cache
