# The two README commands are `make lab` and `make test`; both set everything up first.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8888
TOKEN ?= $(shell python3 -c "import secrets; print(secrets.token_hex(16))")
ROOT_FLAG := $(shell [ "$$(id -u)" = 0 ] && echo --allow-root)
# One torch thread on small machines (2 shared cores are far slower with 2 threads).
export CNNVIS_NUM_THREADS ?= 1
export OMP_NUM_THREADS ?= 1

.PHONY: setup lab test test-py test-js lint js bench wheel clean

setup:
	bash scripts/setup.sh

js:
	cd js && npm run --silent build

## Main job: JupyterLab on 127.0.0.1, opened on the tour notebook; the token is printed.
lab: setup
	@echo ""
	@echo "Open http://127.0.0.1:$(PORT)/lab/tree/00_tour.ipynb?token=$(TOKEN)"
	@echo "(token: $(TOKEN))"
	$(VENV)/bin/jupyter lab --no-browser $(ROOT_FLAG) --ServerApp.ip=127.0.0.1 \
	  --ServerApp.port=$(PORT) --ServerApp.port_retries=0 --IdentityProvider.token=$(TOKEN) \
	  --ServerApp.root_dir=notebooks --LabApp.default_url=/lab/tree/00_tour.ipynb \
	  --LabApp.news_url= --LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate

lint:
	$(VENV)/bin/ruff check cnnvis_widgets tests benchmarks scripts
	$(VENV)/bin/ruff format --check cnnvis_widgets tests benchmarks scripts
	$(VENV)/bin/mypy

test-js:
	cd js && npm test

test-py:
	$(PY) -m pytest -p no:cacheprovider -ra

## Every test: lint, JS unit tests, Python unit tests, executed notebooks, real-browser tests.
test: setup lint test-js test-py

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
