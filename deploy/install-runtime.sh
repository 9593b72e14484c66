#!/bin/sh
# Installs integration-worker with exactly the runtime part of the lock into a new virtual
# environment: the image's build stage runs it, and so do the tests.
#
#   deploy/install-runtime.sh TARGET_VENV [CHECKOUT]
#
# TARGET_VENV must not exist yet. CHECKOUT (default: this script's checkout) holds
# pyproject.toml, the packages and requirements/. PYTHON picks the interpreter (python3.11).
# Every file comes from the package index checked against the lock's hashes; the target gets
# no pip, no setuptools, no sandbox, no dev tools: the runtime lock and the project, nothing more.
set -eu

target=${1:?usage: install-runtime.sh TARGET_VENV [CHECKOUT]}
checkout=${2:-$(cd "$(dirname "$0")/.." && pwd)}
python=${PYTHON:-python3.11}
locks="$checkout/requirements"

if [ -e "$target" ]; then
    echo "install-runtime.sh: $target exists; give a new path" >&2
    exit 2
fi
"$python" "$locks/lockfile.py" --pyproject "$checkout/pyproject.toml" check \
    "$locks/build.lock" "$locks/runtime.lock"

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# A throwaway builder with the locked pip, setuptools and wheel builds the project's wheel
# (no build isolation: an isolated build would fetch an unlocked setuptools).
"$python" -m venv "$scratch/builder"
pip="$scratch/builder/bin/python -m pip --quiet --disable-pip-version-check"
$pip install --require-hashes -r "$locks/build.lock"
# From a copy: setuptools leaves build/ in the tree it builds, and a stale build/ could put
# modules deleted since into the wheel.
mkdir "$scratch/src"
tar -C "$checkout" --exclude=./.venv --exclude=./.tools --exclude=./.git --exclude=./build \
    --exclude='*.egg-info' -cf - . | tar -C "$scratch/src" -xf -
$pip wheel --no-deps --no-build-isolation --wheel-dir "$scratch/wheels" "$scratch/src"

# The target: an empty venv, then the locked runtime set and the project without its deps
# (the lock already holds every one of them; pip checks that when it resolves).
"$python" -m venv --without-pip "$target"
$pip --python "$target/bin/python" install --require-hashes -r "$locks/runtime.lock"
$pip --python "$target/bin/python" install --no-deps "$scratch"/wheels/integration_worker-*.whl
"$scratch/builder/bin/python" "$locks/lockfile.py" installed --python "$target/bin/python" \
    "$locks/runtime.lock"
