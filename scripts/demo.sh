#!/usr/bin/env bash
# Quick start, part 1: set up, then train a CNN on Fashion-MNIST, evaluate it on the
# official 10,000-image test split and predict a few test images.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/cnnkit demo "$@"
