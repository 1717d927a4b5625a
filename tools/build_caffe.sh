#!/usr/bin/env bash
# Build CPU-only pycaffe from PyPI's brocolli-caffe sdist into an ignored folder.
#
# Result: .cache/caffe/venv/bin/python imports `caffe` (real Caffe, the reference parity trusts)
# and has parity installed without its TensorFlow dependency, so `parity dump` runs there.
# Idempotent: each finished step leaves a stamp and is skipped next time. Facts behind each step
# are in ../shared/caffe/NOTES.md (Debian 12, Python 3.11, Boost 1.74, protobuf 3.21).
#
#   tools/build_caffe.sh            # build (about 3 minutes on 2 cores)
#   PARITY_CAFFE_DIR=/elsewhere tools/build_caffe.sh
set -euo pipefail

SDIST_VERSION=9.0.2
SDIST_SHA256=c6410cc60bdd6db685d441b66be7df05410f8850ac88d6b75d48ef9b2315c08a
REPO=$(cd "$(dirname "$0")/.." && pwd)
ROOT=${PARITY_CAFFE_DIR:-$REPO/.cache/caffe}
SRC=$ROOT/brocolli-caffe-$SDIST_VERSION
BUILD=$ROOT/build
VENV=$ROOT/venv
JOBS=${JOBS:-$(nproc)}
mkdir -p "$ROOT"

step() { printf '[build_caffe] %s\n' "$*"; }
done_already() { [ -f "$ROOT/.stamp-$1" ]; }
mark_done() { touch "$ROOT/.stamp-$1"; }

if ! done_already apt; then
  step "installing Debian build dependencies"
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    build-essential cmake patch libboost-system-dev libboost-thread-dev libboost-filesystem-dev \
    libboost-regex-dev libboost-python-dev libgoogle-glog-dev libgflags-dev libprotobuf-dev \
    protobuf-compiler libhdf5-dev libopenblas-dev python3-dev >/dev/null
  mark_done apt
fi

if ! done_already source; then
  step "fetching brocolli-caffe==$SDIST_VERSION (sdist) and checking its sha256"
  rm -rf "$SRC" "$ROOT/dl"; mkdir -p "$ROOT/dl"
  python3 -m pip download -q --no-deps --no-binary :all: "brocolli-caffe==$SDIST_VERSION" -d "$ROOT/dl"
  echo "$SDIST_SHA256  $ROOT/dl/brocolli-caffe-$SDIST_VERSION.tar.gz" | sha256sum -c --quiet
  tar xzf "$ROOT/dl/brocolli-caffe-$SDIST_VERSION.tar.gz" -C "$ROOT"
  step "patching the source for Debian 12 / Python 3.11"
  # 1. pycaffe links Boost.Python by its Debian name and needs gflags.
  pyver=$(python3 -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')
  sed -i "s/-lboost_python /-lboost_python$pyver -lgflags /" "$SRC/python/CMakeLists.txt"
  # 2. net.cpp includes a gtest header it never uses.
  sed -i '/caffe\/test\/test_caffe_main.hpp/d' "$SRC/src/caffe/net.cpp"
  # 3. Stale protoc-3.6 outputs: let CMake regenerate both with this machine's protoc.
  rm -f "$SRC/include/caffe/proto/caffe.pb.h" "$SRC/python/caffe/proto/caffe_pb2.py"
  # 4. The 512 MiB protobuf read cap rejects VGG-16/19 caffemodels; BVLC Caffe uses INT_MAX.
  sed -i 's/SetTotalBytesLimit(536870912)/SetTotalBytesLimit(INT_MAX)/' "$SRC/src/caffe/util/io.cpp"
  grep -q 'SetTotalBytesLimit(INT_MAX)' "$SRC/src/caffe/util/io.cpp"
  # (setup.py's conda/Python-version checks are bypassed: CMake is driven directly below.)
  mark_done source
fi

if ! done_already venv; then
  step "creating the Caffe virtual environment"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  # caffe/__init__ imports skimage and scipy; six for caffe.io; pillow for parity's image loading.
  "$VENV/bin/pip" install -q numpy 'protobuf>=4.21' six scipy scikit-image pillow
  mark_done venv
fi

if ! done_already build; then
  step "building Caffe (CPU only, -j$JOBS)"
  pyinc=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
  npinc=$("$VENV/bin/python" -c 'import numpy; print(numpy.get_include())')
  cmake -S "$SRC" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DANACONDA_HOME="$ROOT/no-conda" \
    -DPYTHON_INCLUDE_DIRS="$pyinc" -DNUMPY_INCLUDE_DIR="$npinc" \
    -DCMAKE_CXX_FLAGS="-I/usr/include/hdf5/serial" \
    -DCMAKE_SHARED_LINKER_FLAGS="-L/usr/lib/x86_64-linux-gnu/hdf5/serial" >"$ROOT/cmake.log" 2>&1 \
    || { tail -30 "$ROOT/cmake.log"; exit 1; }
  cmake --build "$BUILD" -j"$JOBS" >"$ROOT/make.log" 2>&1 || { tail -40 "$ROOT/make.log"; exit 1; }
  mark_done build
fi

step "recording the build in $SRC/parity-build.json"
# Every reference manifest copies this record: which Caffe, patched how, built with what.
"$VENV/bin/python" - "$SRC/parity-build.json" "$SDIST_VERSION" "$SDIST_SHA256" "$REPO/tools/build_caffe.sh" <<'PY'
import hashlib, json, platform, subprocess, sys
out, version, sha, script = sys.argv[1:5]
def cmd(*a):
    try:
        return subprocess.run(a, capture_output=True, text=True).stdout.strip().splitlines()[0]
    except Exception:
        return "unknown"
def deb(pkg):
    return cmd("dpkg-query", "-W", "-f=${Version}", pkg)
info = {
    "distribution": "brocolli-caffe", "version": version, "sdist_sha256": sha,
    "source": f"https://pypi.org/project/brocolli-caffe/{version}/ (sdist)",
    "built_by": "tools/build_caffe.sh",
    "build_script_sha256": hashlib.sha256(open(script, "rb").read()).hexdigest(),
    "patches": ["python/CMakeLists.txt: -lboost_python3XX -lgflags",
                "src/caffe/net.cpp: drop unused gtest include",
                "regenerate caffe.pb.h and caffe_pb2.py with this protoc",
                "src/caffe/util/io.cpp: SetTotalBytesLimit(INT_MAX)"],
    "mode": "CPU_ONLY", "build_type": "Release",
    "compiler": cmd("c++", "--version"), "protoc": cmd("protoc", "--version"),
    "blas": "OpenBLAS " + deb("libopenblas0-pthread"), "boost": deb("libboost-python-dev"),
    "platform": f"{platform.system()} {platform.machine()}", "python": platform.python_version(),
}
json.dump(info, open(out, "w"), indent=2)
PY

step "installing pycaffe and parity into the Caffe virtual environment"
site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$SRC/python" > "$site/pycaffe.pth"
# parity without TensorFlow: `parity dump` needs only numpy, protobuf and pillow.
"$VENV/bin/pip" install -q --no-deps -e "$REPO"
GLOG_minloglevel=2 "$VENV/bin/python" -c 'import caffe; print("[build_caffe] pycaffe", caffe.__version__, "OK at", caffe.__file__)'
