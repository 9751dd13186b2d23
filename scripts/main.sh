#!/usr/bin/env bash
# The main job (installs .venv first). Extra arguments go to the command.
set -euo pipefail
source "$(dirname "$0")/venv.sh"
cd "$root"
exec normlab zoo "$@"
