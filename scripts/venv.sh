# Source me: creates .venv in the repository root (once) and installs normlab with the extras
# named in $NORMLAB_EXTRAS, pinned by constraints.txt. Re-runs are no-ops until those files change.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
extras="${NORMLAB_EXTRAS:-}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
stamp="$venv/.normlab-installed"
want="$(cat "$root/pyproject.toml" "$root/constraints.txt" | sha256sum | cut -c1-16) [$extras]"
if ! grep -qxF "$want" "$stamp" 2>/dev/null; then
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  # torch first and alone: pinned to the CPU wheel where one is on disk.
  "$venv/bin/python" -m pip install --quiet -c "$root/constraints.txt" torch
  spec="$root"; [ -n "$extras" ] && spec="$root[$extras]"
  "$venv/bin/python" -m pip install --quiet -c "$root/constraints.txt" -e "$spec"
  # The stamp lists every extra set installed so far, so both scripts can share one venv.
  echo "$want" >>"$stamp"
fi
export PATH="$venv/bin:$PATH"
