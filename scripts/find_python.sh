#!/usr/bin/env bash
# Print the path of a CPython >= 3.12 for the project's virtual environment; build one if none exists.
#
# Order: $MASQ_PYTHON, python3.13 / python3.12 on PATH, pyenv's installed 3.13 / 3.12, a build cached in
# $MASQ_CACHE (default ~/.cache/masq-jax), else CPython 3.13 built from Debian's own source package
# (scripts/build_python.sh, about 5 minutes on 2 cores) into that cache. Candidates are *run*, not just
# found: a pyenv shim on PATH exists for versions that are not selected and fails when called.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="${MASQ_CACHE:-$HOME/.cache/masq-jax}"

usable() {  # usable PATH: a CPython >= 3.12 with venv and ssl (pip needs both)
  [ -n "$1" ] && "$1" -c 'import sys, ssl, venv; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1
}

candidates=("${MASQ_PYTHON:-}")
for name in python3.13 python3.12; do candidates+=("$(command -v "$name" 2>/dev/null || true)"); done
if command -v pyenv >/dev/null 2>&1; then
  root="$(pyenv root)"
  for v in $(ls -1 "$root/versions" 2>/dev/null | grep -E '^3\.1[23]\.[0-9]+$' | sort -t. -k2,2nr -k3,3nr); do
    candidates+=("$root/versions/$v/bin/python${v%.*}")
  done
fi
candidates+=("$cache/python3.13/bin/python3.13")

for c in "${candidates[@]}"; do
  if usable "$c"; then echo "$c"; exit 0; fi
done

echo "masq: no Python >= 3.12 found; building CPython 3.13 from Debian's source package into $cache (about 5 min)" >&2
bash "$here/build_python.sh" "$cache/python3.13" >&2
usable "$cache/python3.13/bin/python3.13" || {
  echo "masq: error: the CPython build in $cache/python3.13 does not run; see $cache/python3.13.log" >&2; exit 1; }
echo "$cache/python3.13/bin/python3.13"
