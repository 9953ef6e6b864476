#!/usr/bin/env bash
# Idempotent install of mmvssm and its OpenMMLab stack into a virtualenv inside the repo.
#
#   bash tools/install.sh            # creates/updates .venv, ~10 min the first time, < 2 min after
#
# Steps: virtualenv -> torch/torchvision -> mmcv 2.1.0 with ops (built from the source release; CUDA ops
# when a GPU is visible or FORCE_CUDA=1, else CPU ops; the built wheel cached per torch version and kind
# of ops, see tools/misc/mmcv_build.py) -> mmvssm in editable mode (which builds the fused CPU scan kernel)
# with the test requirements.
#
# Environment:
#   MMVSSM_VENV     virtualenv path (default: <repo>/.venv)
#   MMVSSM_PYTHON   interpreter that creates the venv (default: python3.11, else python3)
#   MMVSSM_CACHE    wheel cache (default: ~/.cache/mmvssm)
#   TORCH_VERSION / TORCHVISION_VERSION   (default: 2.14.1 / 0.29.1)
#   MAX_JOBS        parallel compile jobs for mmcv (default: number of cores)
#   FORCE_CUDA      1: mmcv with CUDA ops (needs nvcc), 0: CPU ops only (default: CUDA ops if a GPU is visible)
#   TORCH_CUDA_ARCH_LIST  GPU architectures of mmcv's CUDA ops, e.g. 9.0 (default: those of the visible GPUs)
#   CUDA_HOME       the CUDA toolkit (default: found from nvcc on PATH, else /usr/local/cuda)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MMVSSM_VENV:-$REPO/.venv}"
CACHE="${MMVSSM_CACHE:-$HOME/.cache/mmvssm}"
TORCH_VERSION="${TORCH_VERSION:-2.14.1}"
TORCHVISION_VERSION="${TORCHVISION_VERSION:-0.29.1}"
MMCV_VERSION=2.1.0
export MAX_JOBS="${MAX_JOBS:-$(nproc)}"

log() { printf '\033[1m[install]\033[0m %s\n' "$*"; }

# 1. virtualenv ------------------------------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
  PY="${MMVSSM_PYTHON:-$(command -v python3.11 || command -v python3)}"
  # the base interpreter, also when the command is run from inside another virtualenv
  PY="$("$PY" -c 'import sys; print(getattr(sys, "_base_executable", sys.executable))')"
  log "creating virtualenv $VENV with $PY"
  "$PY" -m venv "$VENV"
fi
PYTHON="$VENV/bin/python"
PIP=("$PYTHON" -m pip --disable-pip-version-check)
# setuptools < 81 still ships pkg_resources, which mmcv's setup.py imports.
"${PIP[@]}" install -q --upgrade pip 'setuptools<81' wheel

# 2. torch ------------------------------------------------------------------------------------------
have_version() {  # have_version MODULE VERSION: installed version (without +local) equals VERSION
  "$PYTHON" - "$1" "$2" <<'EOF' 2>/dev/null
import importlib.metadata as md, sys
name, want = sys.argv[1], sys.argv[2]
sys.exit(0 if md.version(name).split('+')[0] == want else 1)
EOF
}
if have_version torch "$TORCH_VERSION" && have_version torchvision "$TORCHVISION_VERSION"; then
  log "torch $TORCH_VERSION / torchvision $TORCHVISION_VERSION already installed"
else
  log "installing torch $TORCH_VERSION and torchvision $TORCHVISION_VERSION"
  "${PIP[@]}" install -q "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"
fi

# 3. mmcv with ops ---------------------------------------------------------------------------------
# CPU or CUDA ops, the wheel cache key, and the build environment (nvcc, GPU archs, cublas headers) are
# decided by tools/misc/mmcv_build.py: FORCE_CUDA=1 -> CUDA, FORCE_CUDA=0 -> CPU, unset -> CUDA if a GPU is
# visible. It stops here, naming the fix, when CUDA ops are wanted and cannot be built.
MMCV_TOOL="$REPO/tools/misc/mmcv_build.py"
PLAN="$("$PYTHON" "$MMCV_TOOL" plan)"
eval "$PLAN"  # MMCV_OPS, MMCV_CACHE_KEY, MMCV_BUILD_ENV (array), MMCV_PLAN
log "mmcv $MMCV_VERSION: $MMCV_PLAN"
if why_not="$("$PYTHON" "$MMCV_TOOL" check "$MMCV_OPS" "$MMCV_VERSION" 2>/dev/null)"; then
  log "mmcv $MMCV_VERSION with $MMCV_OPS ops already installed"
else
  log "${why_not:-mmcv is not usable}: installing mmcv $MMCV_VERSION with $MMCV_OPS ops"
  # pip's own wheel cache is keyed by the sdist, not by torch: keep ours per torch build and kind of ops.
  WHEEL_DIR="$CACHE/mmcv-$MMCV_VERSION/$MMCV_CACHE_KEY"
  LEGACY_DIR="$CACHE/mmcv-$MMCV_VERSION/${MMCV_CACHE_KEY%-cpu}"  # before the key named the kind of ops
  if [ "$MMCV_OPS" = cpu ] && [ ! -d "$WHEEL_DIR" ] && [ -d "$LEGACY_DIR" ]; then
    mv "$LEGACY_DIR" "$WHEEL_DIR"  # a wheel with CPU ops (or more): fine for CPU ops
  fi
  WHEEL="$(ls "$WHEEL_DIR"/mmcv-"$MMCV_VERSION"-*.whl 2>/dev/null | head -n 1 || true)"
  if [ -z "$WHEEL" ]; then
    # the build finds what the venv installs (ninja) first
    BUILD_PATH="$VENV/bin:$PATH"
    if [ "$MMCV_OPS" = cuda ]; then
      # torch compiles one file at a time without ninja: 4-5 min on 16 cores with it, much longer without
      PATH="$BUILD_PATH" command -v ninja >/dev/null || "${PIP[@]}" install -q ninja
      log "building mmcv $MMCV_VERSION with CUDA ops ($MAX_JOBS jobs; about 2,600 CPU-seconds)"
    else
      log "building mmcv $MMCV_VERSION with CPU ops (about 10 minutes on 2 cores)"
    fi
    BUILD="$(mktemp -d)"
    trap 'rm -rf "$BUILD"' EXIT
    "${PIP[@]}" download -q --no-deps --no-binary :all: --no-build-isolation \
      "mmcv==$MMCV_VERSION" -d "$BUILD"
    tar -xzf "$BUILD/mmcv-$MMCV_VERSION.tar.gz" -C "$BUILD"
    # torch >= 2.14 headers need C++20 (host and nvcc); mmcv 2.1.0 hard-codes c++14/c++17.
    if "$PYTHON" -c 'import torch, sys; v = tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2]); sys.exit(0 if v >= (2, 14) else 1)'; then
      sed -i 's/-std=c++14/-std=c++20/g; s/-std=c++17/-std=c++20/g' "$BUILD/mmcv-$MMCV_VERSION/setup.py"
    fi
    (cd "$BUILD/mmcv-$MMCV_VERSION" && env PATH="$BUILD_PATH" MMCV_WITH_OPS=1 "${MMCV_BUILD_ENV[@]}" \
      "${PIP[@]}" wheel -q --no-deps --no-build-isolation --no-cache-dir -w "$BUILD/wheel" .)
    mkdir -p "$WHEEL_DIR"
    built="$(ls "$BUILD"/wheel/mmcv-*.whl)"
    # copy then rename: a killed install never leaves a half-written wheel in the cache
    cp "$built" "$WHEEL_DIR/.partial.whl" && mv "$WHEEL_DIR/.partial.whl" "$WHEEL_DIR/$(basename "$built")"
    WHEEL="$WHEEL_DIR/$(basename "$built")"
  else
    log "using cached mmcv wheel $WHEEL"
  fi
  "${PIP[@]}" install -q --force-reinstall --no-deps "$WHEEL"
  # mmcv's own runtime requirements (the wheel was installed without resolving them)
  "${PIP[@]}" install -q addict packaging Pillow pyyaml yapf opencv-python 'mmengine==0.10.7'
  if ! why_not="$("$PYTHON" "$MMCV_TOOL" check "$MMCV_OPS" "$MMCV_VERSION")"; then
    echo "[install] error: mmcv installed from $WHEEL does not work: $why_not; remove $WHEEL_DIR" \
      "and rerun" >&2
    exit 1
  fi
fi

# 4. mmvssm (editable; builds the fused CPU selective-scan kernel) ----------------------------------
installed_here() {  # mmvssm is pip-installed (editable) from this checkout
  # run from / so that the checkout itself is not on sys.path
  (cd / && "$PYTHON" - "$REPO" 2>/dev/null) <<'EOF'
import importlib.metadata as md, os, sys
md.version('mmvssm')  # raises if pip never installed it
import mmvssm
sys.exit(0 if os.path.dirname(os.path.dirname(os.path.abspath(mmvssm.__file__))) == sys.argv[1] else 1)
EOF
}
if installed_here && "$PYTHON" -m pip check >/dev/null 2>&1; then
  # Already installed from this checkout: only recompile the kernel if its sources changed.
  log "mmvssm already installed from $REPO; rebuilding the CPU kernel if needed"
  (cd "$REPO" && "$PYTHON" setup.py -q build_ext --inplace)
else
  log "installing mmvssm (editable) with test requirements"
  "${PIP[@]}" install -q --no-build-isolation -e "$REPO[tests]"
fi
"$PYTHON" - <<'EOF'
import mmvssm, mmdet, mmseg, mmpretrain  # noqa: F401  the whole stack imports together
from mmvssm.ops import available_backends
print(f'[install] mmvssm {mmvssm.__version__} ready; scan backends on CPU: {available_backends("cpu")}')
EOF
