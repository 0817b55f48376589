#!/usr/bin/env bash
# Set up metaprune on a fresh machine: a virtual environment (created or reused) with the project
# and its dev extra, and the Fashion-MNIST Debian package where apt is available.
# Usage: bash tools/setup.sh   (idempotent; VENV=path overrides the .venv location)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PY="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c "import metaprune, deap, hydra, pytest" 2>/dev/null \
    || [ pyproject.toml -nt "$VENV/.metaprune-installed" ]; then
    "$VENV/bin/python" -m pip install -q --upgrade pip
    # torch/torchvision pinned to the releases the set-up is tested with (pyproject allows a range)
    "$VENV/bin/python" -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
    "$VENV/bin/python" -m pip install -q -e ".[dev]"
    touch "$VENV/.metaprune-installed"
fi

FMNIST=/usr/share/datasets/fashion-mnist
if [ ! -f "$FMNIST/train-images-idx3-ubyte.gz" ] && command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
    { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq dataset-fashion-mnist; } \
        || echo "warning: could not install dataset-fashion-mnist; set data.root to the IDX files" >&2
fi
echo "metaprune set up in $VENV"
