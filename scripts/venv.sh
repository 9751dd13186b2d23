# Source me: creates .venv in the repository root (once) and installs normlab with the extras
# named in $NORMLAB_EXTRAS, pinned by constraints.txt. Re-runs are no-ops until those files, setup.py
# or the C++ kernels change. The C++ kernels compile against the installed torch (about a minute).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
extras="${NORMLAB_EXTRAS:-}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
stamp="$venv/.normlab-installed"
want="$(cat "$root/pyproject.toml" "$root/constraints.txt" "$root/setup.py" \
  "$root"/src/normlab/kernels/cpu/*.cpp | sha256sum | cut -c1-16) [$extras]"
if ! grep -qxF "$want" "$stamp" 2>/dev/null; then
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  # torch first (pinned to the CPU wheel where one is on disk): the C++ kernels build against it,
  # hence --no-build-isolation.
  "$venv/bin/python" -m pip install --quiet -c "$root/constraints.txt" torch setuptools numpy
  spec="$root"; [ -n "$extras" ] && spec="$root[$extras]"
  "$venv/bin/python" -m pip install --quiet --no-build-isolation -c "$root/constraints.txt" \
    -e "$spec"
  # The stamp lists every extra set installed so far, so both scripts can share one venv.
  echo "$want" >>"$stamp"
fi
export PATH="$venv/bin:$PATH"
