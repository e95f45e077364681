#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian/Ubuntu machine: system packages, then .venv with the pinned
# Python packages. Called by every make target that needs tools; re-runs only what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
PYTHON=${PYTHON:-python3}
STAMP=$VENV/.bootstrap-stamp

# The package needs Python >= 3.11 (pyproject.toml): say so first, not after minutes of pip (a CI
# image with an older Python, e.g. CML's Ubuntu 20.04 ones with 3.8, fails here; docs/CI.md).
have=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || echo none)
case "$have" in
  3.1[1-9] | 3.[2-9][0-9] | [4-9].*) ;;
  *) echo "bootstrap: needs Python >= 3.11, found $have ($PYTHON); set PYTHON=python3.11" >&2; exit 2 ;;
esac

# The native extensions of native/ (Rust, built by maturin from each one's Cargo.lock) need cargo:
# say so before minutes of installing.
if ! command -v cargo >/dev/null 2>&1; then
  echo "bootstrap: cargo is not installed: install Rust >= 1.95 (https://rustup.rs) to build" \
    "the native extensions of native/ (native/README.md)" >&2
  exit 2
fi

# System packages the checks need (one per line in system-packages.txt, '# ...' comments allowed).
missing=()
while read -r pkg; do
  [ -z "$pkg" ] && continue
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' system-packages.txt)
# Node tools (gitlab-ci-local) need npm; the build images ship Node 20.
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
if [ ${#missing[@]} -gt 0 ]; then
  echo "bootstrap: installing system packages: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Node tools, one folder each under tools/ with a committed package-lock.json: `npm ci` when the
# lock changed (the stamp is the one scripts/node_tools.py checks).
for lock in tools/*/package-lock.json; do
  dir=$(dirname "$lock")
  want_lock=$(sha256sum "$lock" | cut -d' ' -f1)
  if [ "$(cat "$dir/node_modules/.lock-sha256" 2>/dev/null)" != "$want_lock" ]; then
    echo "bootstrap: npm ci in $dir"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    echo "$want_lock" >"$dir/node_modules/.lock-sha256"
  fi
done

# Engines built from their Go modules (tools/engines/): once per machine, into a cache outside the
# repo shared by every clone; a changed pin builds anew. Standard library only, so no venv needed.
"$PYTHON" -m scripts.engines build --quiet

# Python packages: reinstall only when the dependency declaration, the lock or a native
# extension's source changed.
native_sources=$(find native -path '*/target' -prune -o -type f -print | LC_ALL=C sort)
# shellcheck disable=SC2086 # one path per word: the repository's paths hold no spaces
want=$(cat pyproject.toml constraints.txt scripts/bootstrap.sh $native_sources | sha256sum | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  touch "$STAMP"  # make compares its mtime with the inputs (system packages, Node locks)
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
echo "bootstrap: installing Python packages into $VENV (pinned by constraints.txt)"
log=$(mktemp)
if ! "$VENV/bin/python" -m pip install --disable-pip-version-check -c constraints.txt \
  -e '.[dev]' >"$log" 2>&1; then
  grep -v "is ignored: it is neither a file nor a directory" "$log" | tail -40
  echo "bootstrap: pip install failed (full log: $log)" >&2
  exit 1
fi
# pykustomize (kustomize as a library, scripts/manifests) declares Python >= 3.14 in its metadata, but
# its wheel (a bundled Go library loaded through cffi) works on 3.11: install it on its own, at the
# version pinned in constraints.txt, skipping only the Python-version check.
pykustomize_pin=$(grep -E '^pykustomize==' constraints.txt)
if ! "$VENV/bin/python" -m pip install --disable-pip-version-check --ignore-requires-python \
  -c constraints.txt "$pykustomize_pin" >"$log" 2>&1; then
  grep -v "is ignored: it is neither a file nor a directory" "$log" | tail -40
  echo "bootstrap: pip install $pykustomize_pin failed (full log: $log)" >&2
  exit 1
fi
for project in native/*/pyproject.toml; do
  crate=$(dirname "$project")
  echo "bootstrap: building $crate (cargo, native/Cargo.lock)"
  if ! CARGO_NET_RETRY=5 "$VENV/bin/python" -m pip install --disable-pip-version-check \
    --force-reinstall --no-deps "./$crate" >"$log" 2>&1; then
    tail -40 "$log"
    echo "bootstrap: pip install ./$crate failed (full log: $log)" >&2
    exit 1
  fi
done
rm -f "$log"
echo "$want" >"$STAMP"
echo "bootstrap: ready"
