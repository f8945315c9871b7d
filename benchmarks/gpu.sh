#!/usr/bin/env bash
# The GPU benchmark (benchmarks/gpu.py) in one call on a bare machine with a GPU and no internet.
#
#   benchmarks/gpu.sh fetch     # here, where the package index is reachable: the wheels the GPU
#                               # machine lacks, into .whl/ (git-ignored; ~50 MB)
#   benchmarks/gpu.sh [ARGS]    # there: a venv over the machine's own torch, the wheels, then
#                               # `benchmarks/gpu.py ARGS` (results in $OUT/gpu.json, gpu.md)
#
# With the device tool: run(command="bash benchmarks/gpu.sh", carry=[".whl"], timeout_s=560).
# Under 8 minutes in all: the venv ~20 s, gpu.py stops starting rows after --budget-s (360 s)
# and is stopped at 430 s whatever it is doing (its JSON is written after every row).
# `PYTHON=... benchmarks/gpu.sh --smoke` runs the same path on a CPU (tiny model, 2 videos).
set -euo pipefail
cd "$(dirname "$0")/.."

# What the GPU image lacks (its python3 has torch, numpy, pillow, click, tqdm, opencv,
# huggingface_hub, tokenizers, safetensors; transformers there is older than ours).
WHEELS=(transformers==5.24.0 av==18.1.0 num2words==0.5.14 scenedetect==0.7.2 webvtt-py==0.6.0
        platformdirs==4.3.8)
SDISTS=(srt==3.5.3 docopt==0.6.2)  # pure Python, published as sources only: built here
PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64)

if [[ "${1:-}" == fetch ]]; then
    exclude=$(git rev-parse --git-path info/exclude)
    mkdir -p "$(dirname "$exclude")"
    grep -qx '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >>"$exclude"
    pip=(${PYTHON:-python3} -m pip)
    "${pip[@]}" download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp "${PLATFORMS[@]/#/--platform=}" -d .whl "${WHEELS[@]}"
    "${pip[@]}" wheel -q --no-deps -w .whl "${SDISTS[@]}"
    rm -f .whl/*.tar.gz
    du -sh .whl
    exit 0
fi

python=${PYTHON:-python3}
ls .whl/*.whl >/dev/null 2>&1 || { echo "no .whl/: run 'benchmarks/gpu.sh fetch' first, then carry .whl" >&2; exit 2; }
venv=${VIDEOVLM_GPU_VENV:-/tmp/videovlm-gpu-venv}
rm -rf "$venv"
"$python" -m venv --without-pip "$venv"
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
# the machine's own packages (torch with CUDA) behind ours: a venv made from a venv does not
# see its parent's packages, even with --system-site-packages
"$python" -c 'import site; print("\n".join(site.getsitepackages()))' >"$site/machine.pth"
"$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" \
    .whl/*.whl
"$venv/bin/python" -c 'import torch, transformers, av; print("torch", torch.__version__,
"cuda", torch.cuda.is_available(), "transformers", transformers.__version__)'
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
timeout 430 "$venv/bin/python" benchmarks/gpu.py "$@"
