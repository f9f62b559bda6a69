#!/usr/bin/env bash
# Downloads into .whl/ (ignored by git: the line /.whl/ goes into .git/info/exclude) the wheels
# that vocseg and benchmarks/gpu/check.sh need on the GPU machine beyond what its image has:
# one version each, for CPython 3.12 on manylinux x86-64, as pinned in benchmarks/gpu/wheels.txt.
# Then checks that these wheels and the image together meet every requirement (wheel_closure.py).
# Fails (exit 1) naming the package when a download or the check fails. Run it where pip reaches
# PyPI, from anywhere in the repository:
#
#   bash benchmarks/gpu/wheels.sh
#
# Environment: PYTHON (default python3; needs pip), VOCSEG_WHEEL_DIR (default REPO/.whl),
# VOCSEG_WHEEL_LIST (default benchmarks/gpu/wheels.txt), VOCSEG_WHEEL_MAX_MB (default 32: the
# device tool carries at most 64 MiB with the working tree).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
dest=${VOCSEG_WHEEL_DIR:-$root/.whl}
pins=${VOCSEG_WHEEL_LIST:-$here/wheels.txt}
max_mb=${VOCSEG_WHEEL_MAX_MB:-32}
PY=${PYTHON:-python3}

if ! "$PY" -m pip --version >/dev/null 2>&1; then
  echo "wheels.sh: '$PY -m pip' does not run: set PYTHON to a Python that has pip (PYTHON=/path/to/python3 bash $0)" >&2
  exit 1
fi
if [ ! -f "$pins" ]; then
  echo "wheels.sh: the pin list $pins does not exist" >&2
  exit 1
fi

# .whl/ stays out of commits: ignored through .git/info/exclude (for a worktree, the main
# repository's), unless git ignores it already.
if [ "$dest" = "$root/.whl" ] && git -C "$root" rev-parse --git-dir >/dev/null 2>&1; then
  if ! git -C "$root" check-ignore -q .whl/x.whl; then
    exclude=$(cd "$root" && git rev-parse --path-format=absolute --git-path info/exclude)
    mkdir -p "$(dirname "$exclude")"
    echo "/.whl/" >>"$exclude"
    echo "wheels.sh: added /.whl/ to $exclude"
  fi
fi
mkdir -p "$dest"

platforms=()
for n in $(seq 39 -1 17); do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
platforms+=(--platform manylinux2014_x86_64 --platform manylinux1_x86_64)

count=0
while IFS= read -r line || [ -n "$line" ]; do
  pin=${line%%#*}
  pin=$(echo "$pin" | tr -d '[:space:]')
  [ -z "$pin" ] && continue
  if ! "$PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
      --python-version 3.12 --implementation cp "${platforms[@]}" -d "$dest" "$pin"; then
    echo "wheels.sh: could not download $pin as a wheel for CPython 3.12 on manylinux x86-64 (pip's message is above). Fix its line in $pins and run: bash $0" >&2
    exit 1
  fi
  count=$((count + 1))
done <"$pins"

if ! "$PY" "$here/wheel_closure.py" --wheels "$dest" --pins "$pins" --image "$here/image-packages.txt" \
    --pyproject "$root/pyproject.toml" --remove-stale; then
  echo "wheels.sh: the wheels in $dest do not cover what vocseg needs on the GPU machine (errors above)." >&2
  exit 1
fi

files=$(find "$dest" -maxdepth 1 -type f -name '*.whl' | wc -l)
bytes=$(find "$dest" -maxdepth 1 -type f -name '*.whl' -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')
mb=$(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1048576 }')
if awk -v b="$bytes" -v m="$max_mb" 'BEGIN { exit !(b > m * 1048576) }'; then
  echo "wheels.sh: $dest holds $mb MiB of wheels, over the $max_mb MiB allowed (VOCSEG_WHEEL_MAX_MB); the device tool carries 64 MiB in all" >&2
  exit 1
fi
echo "wheels.sh: $dest ready: $files wheels ($count pinned), $mb MiB. Carry it: run(..., carry=[\".whl\"])"
