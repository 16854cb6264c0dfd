# The two README commands are `make lab` and `make test`; both set everything up first.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8888
# Evaluated once (`?=` would draw a new token at each use, and the printed URL would not work);
# `make lab TOKEN=...` or TOKEN in the environment still wins.
ifeq ($(origin TOKEN),undefined)
TOKEN := $(shell python3 -c "import secrets; print(secrets.token_hex(16))")
endif
# One torch thread on small machines (2 shared cores are far slower with 2 threads).
export CNNVIS_NUM_THREADS ?= 1
export OMP_NUM_THREADS ?= 1

.PHONY: setup lab test test-py test-js lint js bench wheel clean readme-images

setup:
	bash scripts/setup.sh

js:
	cd js && npm run --silent build

## Main job: JupyterLab on 127.0.0.1, opened on the tour notebook; the URL with the token is
## printed. `cnnvis lab` starts it with the package's Lab settings (widget state saved in the
## notebooks, no news or update checks): cnnvis_widgets/_jupyter/lab/settings/overrides.json.
lab: setup
	$(PY) -m cnnvis_widgets.cli lab --port $(PORT) --token $(TOKEN) --dir notebooks

lint:
	$(VENV)/bin/ruff check cnnvis_widgets tests benchmarks scripts
	$(VENV)/bin/ruff format --check cnnvis_widgets tests benchmarks scripts
	$(VENV)/bin/mypy

test-js:
	cd js && npm test

# CNNVIS_FULL_FINDINGS=1: the AM finding also at the lucid preset's own 512 steps (about 7 min)
# TEST_WORKERS: pytest-xdist processes, one file each at a time (the tests use one torch thread,
# so a 2-core machine runs two files side by side); TEST_WORKERS=0 runs them in this process.
TEST_WORKERS ?= 2
test-py:
	CNNVIS_FULL_FINDINGS=1 $(PY) -m pytest -p no:cacheprovider -ra -n $(TEST_WORKERS) --dist loadfile

## Every test: lint, JS unit tests, Python unit tests, executed notebooks, real-browser tests.
test: setup lint test-js test-py

## The README's pictures: every widget screenshotted in JupyterLab, copied to docs/images/.
readme-images: setup
	$(PY) -m pytest -p no:cacheprovider -q tests/e2e/test_lab_screenshots.py
	$(PY) scripts/readme_images.py

bench: setup
	$(PY) benchmarks/bench_activation_max.py

## The release files: sdist, then the wheel built from it (python -m build). The build hook
## (hatch_build.py) runs npm ci / npm run build in js/ when the bundle is missing or stale; the
## check below fails if the front end is not in the wheel.
wheel: setup
	rm -rf dist
	$(PY) -m build --outdir dist .
	$(PY) -c "import glob, zipfile; n = set(zipfile.ZipFile(glob.glob('dist/*.whl')[0]).namelist()); \
	  s = 'cnnvis_widgets/widgets/static/'; \
	  miss = [f for f in ('widget.js', 'widget.css', 'vendor/require.js', 'vendor/embed-amd.js', \
	    'vendor/anywidget.js') if s + f not in n]; assert not miss, f'front end missing: {miss}'; \
	  print('dist/ ok: the wheel carries the front end')"

clean:
	rm -rf dist build cnnvis_widgets/widgets/static test-artifacts
