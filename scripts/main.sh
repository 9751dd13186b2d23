#!/usr/bin/env bash
# The main job: the bench's `quick` comparison on its embedded default data (installs .venv
# first). Extra arguments go to `normlab bench`, e.g. `--out runs/quick` or `--set train.steps=60`.
set -euo pipefail
source "$(dirname "$0")/venv.sh"
cd "$root"
exec normlab bench --preset quick "$@"
