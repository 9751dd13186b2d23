#!/usr/bin/env bash
# Runs the default test suite (installs .venv with the dev, hf and gpu extras first).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m slow`.
set -euo pipefail
NORMLAB_EXTRAS="dev,hf,gpu" source "$(dirname "$0")/venv.sh"
cd "$root"
exec python -m pytest "$@"
