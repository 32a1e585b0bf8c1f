#!/usr/bin/env bash
# Build CPython 3.13 from Debian's own `python3.13` source package (trixie) into PREFIX (idempotent).
#
#   bash scripts/build_python.sh PREFIX
#
# The machines reach only the package registries, so the source comes through apt: a deb-src entry for
# trixie on the Debian mirror the machine already uses, `apt-get source --download-only python3.13`, then
# the upstream tarball inside it is configured and built (`make -j$(nproc)`). One line of progress; the
# full log is PREFIX.log; a failure prints one line naming the step and the log. An existing working
# PREFIX is reused. The build dependencies (libssl-dev, libffi-dev, zlib1g-dev, ...) are installed with
# apt when missing.
set -euo pipefail
prefix="${1:?usage: build_python.sh PREFIX}"
log="$prefix.log"
mkdir -p "$(dirname "$prefix")"
if "$prefix/bin/python3.13" -c 'import ssl, venv' >/dev/null 2>&1; then exit 0; fi
: > "$log"

step() {  # step NAME CMD...: run CMD with output to the log; on failure one line and exit 1
  local name="$1"; shift
  if ! "$@" >>"$log" 2>&1; then
    echo "masq: error: building Python failed at '$name' (log: $log)" >&2; exit 1
  fi
}

mirror="$(grep -hoE 'https?://[^ ]*/debian/?$|https?://[^ ]*/debian ' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
          | head -1 | tr -d ' ' || true)"
[ -n "$mirror" ] || { echo "masq: error: no Debian mirror in /etc/apt/sources.list*; add one, or install Python >= 3.12 and pass PYTHON=..." >&2; exit 1; }
apt_dir=/var/tmp/masq-jax-apt  # our own sources and lists: the system's apt setup is left as it is
src_list=$apt_dir/sources/trixie-src.list
lists=$apt_dir/lists
mkdir -p "$lists/partial" "$apt_dir/sources" "$apt_dir/parts"
echo "deb-src $mirror trixie main" > "$src_list"
apt_opts=(-o "Dir::State::Lists=$lists" -o "Dir::Etc::SourceList=$src_list" -o "Dir::Etc::SourceParts=$apt_dir/parts")

echo "masq: building CPython 3.13 (Debian trixie source) into $prefix; log $log" >&2
need=()
for pkg in build-essential libssl-dev libffi-dev zlib1g-dev libbz2-dev liblzma-dev libsqlite3-dev libreadline-dev; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  step "apt-get update" apt-get update
  step "apt-get install ${need[*]}" apt-get install -y --no-install-recommends "${need[@]}"
fi
work="$(mktemp -d "${TMPDIR:-/tmp}/masq-python-build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
step "apt-get update (trixie sources)" apt-get "${apt_opts[@]}" update
(cd "$work" && step "apt-get source python3.13" apt-get "${apt_opts[@]}" source --download-only python3.13)
tarball="$(ls "$work"/python3.13_*.orig.tar.* | head -1)"
step "unpack $tarball" tar -xf "$tarball" -C "$work"
srcdir="$(find "$work" -maxdepth 1 -type d -name 'Python-3.13*' | head -1)"
[ -n "$srcdir" ] || { echo "masq: error: no Python-3.13 source directory in $tarball (log: $log)" >&2; exit 1; }
tmp_prefix="$prefix.partial"
rm -rf "$tmp_prefix"
(cd "$srcdir" && step configure ./configure --prefix="$prefix")
(cd "$srcdir" && step make make -j"$(nproc)")
(cd "$srcdir" && step "make install" make install DESTDIR="$tmp_prefix")
# DESTDIR installs under $tmp_prefix/$prefix: move that tree into place in one rename.
rm -rf "$prefix"
mv "$tmp_prefix$prefix" "$prefix"
rm -rf "$tmp_prefix"
echo "masq: built $("$prefix/bin/python3.13" --version) in $prefix" >&2
