#!/usr/bin/env bash
# GPU-free CUDA check: builds the `cuda` feature and compiles every kernel in
# crates/cuda/kernels/ with NVRTC to PTX for sm_80 and sm_90 (and to CUBIN, reporting registers
# and spills), failing on any compile error. NVRTC and the CUDA headers come from the PyPI wheels
# nvidia-cuda-nvrtc and nvidia-cuda-runtime 13.0.x, installed into a venv under target/.
#
#   .ci/cuda-ptx.sh            # from anywhere in the repository
#   CUDA_PTX_VENV=dir .ci/cuda-ptx.sh   # reuse/choose the venv location
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${CUDA_PTX_VENV:-target/cuda-ptx-venv}
PY=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi
"$VENV/bin/pip" install --quiet --disable-pip-version-check \
    'nvidia-cuda-nvrtc==13.0.*' 'nvidia-cuda-runtime==13.0.*'

# The wheels' lib and include directories (nvidia/cu13/{lib,include} in 13.x wheels; the
# per-package layout nvidia/cuda_nvrtc/lib + nvidia/cuda_runtime/include of 12.x is handled too).
read -r LIB INC < <("$VENV/bin/python" - <<'PY'
import glob, os, nvidia
lib = inc = ""
for root in nvidia.__path__:
    for d in sorted(glob.glob(os.path.join(root, "*", "lib"))):
        if not lib and glob.glob(os.path.join(d, "libnvrtc.so*")):
            lib = d
    for d in sorted(glob.glob(os.path.join(root, "*", "include"))):
        if not inc and os.path.exists(os.path.join(d, "cuda_bf16.h")):
            inc = d
print(lib, inc)
PY
)
if [ -z "$LIB" ] || [ -z "$INC" ]; then
    echo "cuda-ptx: could not find libnvrtc / cuda_bf16.h in the wheels (lib='$LIB' include='$INC')" >&2
    exit 1
fi
echo "cuda-ptx: NVRTC from $LIB, headers from $INC"
export LD_LIBRARY_PATH="$LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export TINYLLAMA_CUDA_INCLUDE="$INC"

# With `mpi` too: the NCCL and MPI paths compile together (the multi-process tests reuse this build).
cargo build --release --features cuda,mpi
./target/release/tinyllama selftest --compile-only --arch sm_80,sm_90 --cubin
# The NVRTC-dependent unit tests (the on-disk kernel cache), skipped elsewhere.
cargo test --release -p tinyllama-cuda --lib nvrtc
echo "cuda-ptx: every kernel compiled for sm_80 and sm_90"
