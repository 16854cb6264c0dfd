#!/usr/bin/env bash
# Set up everything on a fresh machine (Python 3.11, pip, apt, npm): Debian's chromium for the
# browser tests, a virtual environment with pinned torch/torchvision, the front-end bundle built
# with esbuild, and the package (editable). Safe to run again: finished steps are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VENV=.venv
TORCH_PIN="torch==2.14.1 torchvision==0.29.1"

say() { printf '\n== %s\n' "$*"; }

# 1. Chromium (browser tests, PDF printing). apt needs root; without it we say what to run.
if [ ! -x /usr/bin/chromium ]; then
  say "installing Debian's chromium"
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium poppler-utils >/dev/null
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    sudo apt-get update -qq
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium poppler-utils >/dev/null
  else
    echo "warning: /usr/bin/chromium is missing and apt needs root: run" \
         "'sudo apt-get install chromium' (browser tests are skipped until then)" >&2
  fi
fi

# 2. Python environment.
if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
fi

# 3. Front end: npm packages from the lock file, then the esbuild bundle into the package (before
# the editable install, whose build hook (hatch_build.py) then finds the bundle up to date).
if [ ! -d js/node_modules ] || [ js/package-lock.json -nt js/node_modules/.stamp ]; then
  say "installing the front end's npm packages"
  (cd js && npm ci --prefer-offline --no-audit --no-fund --loglevel=error)
  touch js/node_modules/.stamp
fi
say "building the front-end bundle"
(cd js && npm run --silent build)
test -s cnnvis_widgets/widgets/static/widget.js

# 4. The package, editable (the widgets and sample-photo packages are plain dependencies).
stamp="$VENV/.cnnvis-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ scripts/setup.sh -nt "$stamp" ] \
   || [ hatch_build.py -nt "$stamp" ]; then
  say "installing $TORCH_PIN and the package"
  # shellcheck disable=SC2086
  "$VENV/bin/python" -m pip install -q $TORCH_PIN
  "$VENV/bin/python" -m pip install -q -e ".[dev]"
  touch "$stamp"
fi
echo "setup done"
