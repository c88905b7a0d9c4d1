#!/usr/bin/env bash
# Set up the dgmn_mm development environment in a virtualenv (default: .venv in the repo root).
#
# Idempotent: every step checks what is installed and skips it. Honours pip's standard PIP_FIND_LINKS,
# so a wheel cache (e.g. a prebuilt mmcv 2.1.0 wheel) skips the mmcv build; without one, mmcv 2.1.0 is
# built from its PyPI source package with the C++ standard raised to C++20 (torch 2.14's headers need it;
# mmcv 2.1.0's setup.py asks for C++17). The built wheel is kept in build/wheels so that a re-created
# virtualenv re-installs it in seconds.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
VENV=${VENV:-$ROOT/.venv}
PY=$VENV/bin/python
PIP=("$PY" -m pip --disable-pip-version-check)
WHEELS=$ROOT/build/wheels
mkdir -p "$WHEELS"
# our own wheel cache is looked at first; the user's PIP_FIND_LINKS (if any) after it
export PIP_FIND_LINKS="$WHEELS${PIP_FIND_LINKS:+ $PIP_FIND_LINKS}"

# setuptools: >=77 for the pyproject metadata, <80 because setuptools 80 turned `setup.py develop` into a PEP 660
# install (see the dgmn_mm step below); mmcv and mmengine import pkg_resources at run time (gone in 82)
SETUPTOOLS='setuptools>=77,<80'

log() { printf '[setup %(%H:%M:%S)T] %s\n' -1 "$*"; }

# has DIST==VERSION (VERSION may be a PEP 440 specifier set such as '>=77,<81')
has() {
  "$PY" - "$1" "$2" <<'PYEOF' 2>/dev/null
import sys
from importlib.metadata import version, PackageNotFoundError
name, spec = sys.argv[1], sys.argv[2]
try:
    v = version(name)
except PackageNotFoundError:
    sys.exit(1)
if spec[0].isdigit():
    sys.exit(0 if v.split('+')[0] == spec else 1)
from packaging.specifiers import SpecifierSet
sys.exit(0 if SpecifierSet(spec).contains(v) else 1)
PYEOF
}

if [ ! -x "$PY" ]; then
  log "creating virtualenv $VENV"
  python3 -m venv "$VENV"
fi
has packaging '>=20' || "${PIP[@]}" install -q packaging

if has torch 2.14.1 && has torchvision 0.29.1; then
  log "torch 2.14.1 / torchvision 0.29.1: present"
else
  log "installing torch 2.14.1 + torchvision 0.29.1"
  "${PIP[@]}" install -q torch==2.14.1 torchvision==0.29.1
fi

if has setuptools "${SETUPTOOLS#setuptools}" && has wheel '>=0' && has ninja '>=0' && has numpy '>=1.24'; then
  log "build tools: present"
else
  log "installing build tools ($SETUPTOOLS, wheel, ninja, numpy)"
  "${PIP[@]}" install -q "$SETUPTOOLS" wheel ninja numpy
fi

# mmcv imports mmengine: install it first so that the mmcv check below can import mmcv._ext
if has mmengine 0.10.7; then
  log "mmengine 0.10.7: present"
else
  log "installing mmengine 0.10.7"
  "${PIP[@]}" install -q mmengine==0.10.7 "torch==2.14.1" "$SETUPTOOLS"
fi

mmcv_ok() { has mmcv 2.1.0 && "$PY" -c "import mmcv._ext" 2>/dev/null; }
if mmcv_ok; then
  log "mmcv 2.1.0 with ops: present"
else
  log "mmcv 2.1.0: looking for a wheel (PIP_FIND_LINKS=$PIP_FIND_LINKS)"
  if "${PIP[@]}" install -q --no-deps --only-binary mmcv mmcv==2.1.0 2>/dev/null && mmcv_ok; then
    log "mmcv 2.1.0 installed from a wheel"
  else
    "${PIP[@]}" uninstall -q -y mmcv 2>/dev/null || true
    log "mmcv 2.1.0: no usable wheel, building from source (about 10 min on 2 cores)"
    SRC=$ROOT/build/mmcv
    rm -rf "$SRC" && mkdir -p "$SRC"
    "${PIP[@]}" download -q --no-deps --no-build-isolation --no-binary :all: mmcv==2.1.0 -d "$SRC"
    tar xzf "$SRC"/mmcv-2.1.0.tar.gz -C "$SRC"
    # torch >= 2.10 headers require C++20; this is the only change to the source
    sed -i "s/'-std=c++17'/'-std=c++20'/g" "$SRC"/mmcv-2.1.0/setup.py
    grep -q -- "-std=c++20" "$SRC"/mmcv-2.1.0/setup.py || { echo "could not patch mmcv setup.py" >&2; exit 1; }
    CFLAGS="${CFLAGS:--g0}" CXXFLAGS="${CXXFLAGS:--g0}" MMCV_WITH_OPS=1 FORCE_CUDA="${FORCE_CUDA:-0}" \
      MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
      "${PIP[@]}" wheel -q --no-build-isolation --no-deps -w "$WHEELS" "$SRC"/mmcv-2.1.0
    "${PIP[@]}" install -q --no-deps "$WHEELS"/mmcv-2.1.0-*.whl
    mmcv_ok || { echo "mmcv was built but 'import mmcv._ext' fails" >&2; exit 1; }
    log "mmcv 2.1.0 built and installed (wheel kept in $WHEELS)"
  fi
fi

need=()
for spec in mmdet==3.3.0 mmsegmentation==1.2.2 mmpretrain==1.2.0; do
  has "${spec%%==*}" "${spec##*==}" || need+=("$spec")
done
has ftfy '>=0' || need+=(ftfy)
has regex '>=0' || need+=(regex)
has pytest '>=7' || need+=("pytest>=7")
has pycocotools '>=2' || need+=(pycocotools)
has matplotlib '>=3' || need+=(matplotlib)
# export and deployment (ONNX), the OpenMMLab package manager, mmdet's benchmark tool, property tests
has onnx '>=1.16' || need+=("onnx>=1.16")
has onnxscript '>=0.2' || need+=("onnxscript>=0.2")
has onnxruntime '>=1.18' || need+=("onnxruntime>=1.18")
has openmim '>=0.3' || need+=("openmim>=0.3")
has psutil '>=5' || need+=(psutil)
has hypothesis '>=6' || need+=("hypothesis>=6")
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  # mmcv is already there: keep pip from touching it or torch
  "${PIP[@]}" install -q "${need[@]}" "mmcv==2.1.0" "torch==2.14.1" "torchvision==0.29.1" "$SETUPTOOLS"
else
  log "OpenMMLab packages: present"
fi

# dgmn_mm itself, editable, as a setuptools "develop" install: the metadata (dgmn_mm.egg-info) stays in the work
# tree and site-packages gets dgmn-mm.egg-link + an easy-install.pth line, the layout of OpenMMLab's own
# `pip install -v -e .`. mim (openmim 0.3) finds a codebase at pkg_resources' location of the distribution +
# the package name: here the repository, whose dgmn_mm/.mim links configs/, tools/ and model-index.yml, so
# `mim search/train/test/run dgmn_mm` work. A PEP 660 editable install (`pip install -e .` with setuptools >= 64)
# keeps the metadata in site-packages, where no dgmn_mm folder exists, and mim fails on it.
# in_tree_with_mim: imported from this work tree, and mim's lookup lands on the same folder (checked outside it)
in_tree_with_mim() {
  (cd / && "$PY" - "$ROOT" <<'PYEOF'
import os, sys, warnings
warnings.simplefilter('ignore')
import dgmn_mm
from pkg_resources import get_distribution
root = sys.argv[1]
pkg = os.path.dirname(os.path.abspath(dgmn_mm.__file__))
mim_pkg = os.path.join(get_distribution('dgmn_mm').location, 'dgmn_mm')
ok = pkg == os.path.join(root, 'dgmn_mm') and os.path.isfile(os.path.join(mim_pkg, '.mim', 'model-index.yml')) \
    and os.path.samefile(mim_pkg, pkg)
sys.exit(0 if ok else 1)
PYEOF
  ) 2>/dev/null
}
if in_tree_with_mim; then
  log "dgmn_mm (editable, develop): present"
else
  # (from /: the checkout's own dgmn_mm.egg-info is not an installation)
  if (cd / && has dgmn_mm '>=0'); then
    log "dgmn_mm: replacing the installed copy (another location or a PEP 660 editable install)"
    "${PIP[@]}" uninstall -q -y dgmn_mm
  fi
  log "installing dgmn_mm (editable: setup.py develop, also builds the C++ kernel in place)"
  mkdir -p "$ROOT/build"
  if ! "$PY" setup.py -q develop --no-deps > "$ROOT/build/develop.log" 2>&1; then
    log "setup.py develop failed (see build/develop.log): again without the C++ kernel (its build is retried below)"
    DGMN_MM_BUILD_EXT=0 "$PY" setup.py -q develop --no-deps >> "$ROOT/build/develop.log" 2>&1 || {
      echo "setup.py develop failed: see $ROOT/build/develop.log" >&2; exit 1; }
  fi
  (cd / && "$PY" -c "import dgmn_mm, sys; sys.exit(0 if dgmn_mm.__file__.startswith('$ROOT/') else 1)") || {
    echo "dgmn_mm was installed but 'import dgmn_mm' does not load $ROOT/dgmn_mm" >&2; exit 1; }
fi
# the C++/OpenMP kernel of the fast DGMN2 attention: setup.py builds it with the package (develop above);
# rebuild in place (same extension, same flags) when it is missing or older than its source
SO=$(ls "$ROOT"/dgmn_mm/ops/_sampled_attention_cpp*.so 2>/dev/null | head -1 || true)
if [ -n "$SO" ] && [ ! "$ROOT/dgmn_mm/ops/csrc/sampled_attention.cpp" -nt "$SO" ]; then
  log "sampled-attention kernel: present"
else
  log "building the sampled-attention C++ kernel (1-4 min)"
  mkdir -p "$ROOT/build"
  if ! "$PY" "$ROOT/dgmn_mm/ops/csrc/build.py" > "$ROOT/build/csrc_build.log" 2>&1; then
    log "kernel build failed (see build/csrc_build.log): the fast attention uses its pure-PyTorch backend"
  fi
fi

log "done: $("$PY" -c 'import torch, mmcv, mmengine, mmdet, mmseg, mmpretrain; print("torch", torch.__version__, "mmcv", mmcv.__version__, "mmengine", mmengine.__version__, "mmdet", mmdet.__version__, "mmseg", mmseg.__version__, "mmpretrain", mmpretrain.__version__)')"
