#!/usr/bin/env bash
# One training run on a lent GPU machine, in the repository root: expand the bank's
# densities with NumPy, train in mixed precision (bf16 autocast on CUDA) for MINUTES,
# evaluate the best checkpoint (chosen on validation) on the bank's test and validation
# splits (and the INIT model on the same validation molecules), and leave best.pt,
# metrics.csv, test.json, val.json (init_val.json) and log.txt in $OUT.
#
# Settings (environment):  BANK (data/qm9)  PRESET (unet, the bake-off's winner)  INIT (a model file to
# continue from, e.g. src/rhosr/models/default.pt; overrides PRESET)  MINUTES (7)
# DEVICE (cuda)  BATCH (4)  VAL_EVERY (200)  OUT (./gpu-out)  WORK (/tmp/rhosr-gpu)
# PYTHON (python3).
#
# The GPU machine has torch, numpy, scipy, h5py and tqdm but not ASE; carry its wheel
# (pure Python) in .whl, prepared here once:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux2014_x86_64 -d .whl ase==3.29.0
# and run with the device tool:  run(command="OUT=$OUT bash scripts/gpu_train.sh",
# carry=[".whl"], timeout_s=600).  The CPU smoke test (tests/test_gpu_script.py) runs
# this file with DEVICE=cpu PRESET=tiny on a four-molecule bank.
set -euo pipefail

PY=${PYTHON:-python3}
BANK=${BANK:-data/qm9}
PRESET=${PRESET:-unet}
INIT=${INIT:-}
MINUTES=${MINUTES:-7}
DEVICE=${DEVICE:-cuda}
BATCH=${BATCH:-4}
VAL_EVERY=${VAL_EVERY:-200}
OUT=${OUT:-$PWD/gpu-out}
WORK=${WORK:-/tmp/rhosr-gpu}
mkdir -p "$OUT" "$WORK"

if compgen -G ".whl/*.whl" > /dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$WORK/site" .whl/*.whl
    export PYTHONPATH="$WORK/site:$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
else
    export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
fi
export RHOSR_CACHE=${RHOSR_CACHE:-$WORK/cache} PYTHONUNBUFFERED=1

model=(--preset "$PRESET")
[ -n "$INIT" ] && model=(--init "$INIT")
resume=()
[ -f "$WORK/run/last.pt" ] && resume=(--resume)

{
    "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
    start=$(date +%s)
    "$PY" -m rhosr bank expand "$BANK" --workers "$(nproc)"
    echo "expand: $(( $(date +%s) - start )) s"
    "$PY" -m rhosr train "$BANK" --out "$WORK/run" --minutes "$MINUTES" --device "$DEVICE" \
        --batch "$BATCH" --val-every "$VAL_EVERY" --no-progress "${model[@]}" "${resume[@]}"
    "$PY" -m rhosr evaluate --model "$WORK/run/best.pt" "$BANK" --split test --device "$DEVICE" \
        --json "$OUT/test.json"
    # validation NMAE of the new and (with INIT) the start model on the same molecules:
    # bundle the new one only if it is better there (scripts/bundle_model.py)
    "$PY" -m rhosr evaluate --model "$WORK/run/best.pt" "$BANK" --split val --device "$DEVICE" \
        --json "$OUT/val.json" | tail -1
    if [ -n "$INIT" ]; then
        "$PY" -m rhosr evaluate --model "$INIT" "$BANK" --split val --device "$DEVICE" \
            --json "$OUT/init_val.json" | tail -1
    fi
    cp "$WORK/run/best.pt" "$WORK/run/metrics.csv" "$OUT/"
    echo "done: $(( $(date +%s) - start )) s"
} 2>&1 | tee "$OUT/log.txt"
