#!/usr/bin/env bash
# The one long training run of the bundled model, continued in every session.
#
#   scripts/long_train.sh start [MINUTES]   resume in the background for MINUTES more (default 150)
#   scripts/long_train.sh cool [MINUTES]    a cooldown branch of the run at LR/4 (default 30)
#   scripts/long_train.sh save              write the committed resume point from the run
#   scripts/long_train.sh status            step, minutes, last and best validation
#
# The run lives in runs/long (not committed). Its state travels in the repository as
# models/long/resume.pt (a slim checkpoint, ~4 MB: EMA weights, raw weights as a float16
# difference, schedule position; rhosr.training.checkpoint.slim_checkpoint), models/long/best.pt
# (a model file of the best weights so far, only when they are not the resume point's EMA
# weights) and models/long/metrics.csv (the whole curve).
# `start` rebuilds runs/long from them when the folder is missing, so a fresh clone
# continues where the last session stopped; with neither, the run starts from INIT (default:
# the bundled model; models/long/init.pt holds the weights the current run started from, with
# the training phases before it) as PRESET (default: INIT's architecture; a preset reading
# more inputs, e.g. unet-charge, starts with the new input weights at zero).
#
# The schedule has no horizon ('constant': 200 warm-up steps, then LR with an EMA of the
# weights), so that every resume continues one schedule (docs/benchmarks.md, "Schedule at
# equal minutes": against a warm restart and a 4x step-down from the same point). A bundle
# may come from a short cooldown branch of the run at LR/4 (`scripts/long_train.sh cool
# MINUTES`, runs/cool; the run itself goes on at LR), chosen on the same validation.
# Data: every bank's training molecules (QM9 share MIX_QM9, data/large share MIX_LARGE,
# data/exotic the rest);
# validation: the first 50 of the banks' validation molecules in bank order (35 data/exotic,
# 15 QM9: the same 50 as the model card's run validation; data/large's come after them).
#
# Bundling rule: when models/long/best.pt's validation is below the bundled model's on the
# same 50 molecules (`scripts/long_train.sh status` prints both), bundle it with
# scripts/bundle_model.py and remeasure the model card.
#
# Settings (environment): LR (1e-4; every resume passes it)  EMA (0.999)  PRECISION (auto =
# rhosr train's: bf16 where the CPU has AMX or AVX-512 BF16, else fp32)  MIX_QM9 (0.63)
# MIX_LARGE (0.1)  SEED (3)  THREADS (nproc).
set -euo pipefail
cd "$(dirname "$0")/.."

RUN=runs/long
STATE=models/long
LR=${LR:-1e-4}
EMA=${EMA:-0.999}
MIX_QM9=${MIX_QM9:-0.63}
MIX_LARGE=${MIX_LARGE:-0.1}
SEED=${SEED:-3}
PY=${PYTHON:-python3}

seconds_done() {
    "$PY" - "$1" <<'EOF'
import sys, torch
print(float(torch.load(sys.argv[1], weights_only=True, map_location="cpu")["training"]["seconds"]))
EOF
}


# launch OUT LR MINUTES: train in the background in OUT (resuming OUT/last.pt when there is
# one, else from INIT) at rate LR for MINUTES more
launch() {
    local out=$1 lr=$2 more=$3
    args=(data/exotic data/qm9 data/large --out "$out" --mix "$(
        "$PY" -c "print(round(1 - $MIX_QM9 - $MIX_LARGE, 6))")" "$MIX_QM9" "$MIX_LARGE" --ids '*-train-*' 'qm9_*'
        --val-ids '*-val-*' 'qm9_*' --val-max 50 --val-every 400 --lr "$lr" --ema "$EMA"
        --schedule constant --seed "$SEED" --precision "${PRECISION:-auto}" --no-progress)
    if [ -f "$out/last.pt" ]; then
        total=$("$PY" -c "print(round($(seconds_done "$out/last.pt") / 60 + $more, 1))")
        args+=(--resume --minutes "$total")
    else
        args+=(--init "${INIT:-default}" --minutes "$more")
        [ -n "${PRESET:-}" ] && args+=(--preset "$PRESET")
    fi
    # the run imports a snapshot of the code taken now, so that work on the tree while it
    # runs (moved modules, lazy imports) cannot break it
    rm -rf "$out/src" && cp -r src "$out/src" && find "$out/src" -name __pycache__ -prune -exec rm -rf {} +
    echo "rhosr train ${args[*]}" | tee -a "$out/log.txt"
    PYTHONPATH="$PWD/$out/src" OMP_NUM_THREADS=${THREADS:-$(nproc)} \
        nohup "$PY" -m rhosr train "${args[@]}" >> "$out/log.txt" 2>&1 &
    echo "started (pid $!), log $out/log.txt"
}

case "${1:-start}" in
start)
    mkdir -p "$RUN"
    if [ ! -f "$RUN/last.pt" ] && [ -f "$STATE/resume.pt" ]; then
        cp "$STATE/resume.pt" "$RUN/last.pt"
        cp "$STATE/metrics.csv" "$RUN/metrics.csv"
    fi
    launch "$RUN" "$LR" "${2:-150}"
    ;;
cool)
    # a cooldown branch of the run's latest state at LR/4 in runs/cool (made anew); bundle
    # its best.pt when its validation beats the run's and the bundled model's
    [ -f "$RUN/last.pt" ] || { echo "no run in $RUN to branch from" >&2; exit 2; }
    rm -rf runs/cool && mkdir -p runs/cool
    cp "$RUN/last.pt" "$RUN/metrics.csv" runs/cool/
    launch runs/cool "$("$PY" -c "print($LR / 4)")" "${2:-30}"
    ;;
save)
    mkdir -p "$STATE"
    "$PY" -c "from rhosr.training.checkpoint import slim_checkpoint as s; print(s('$RUN/last.pt', '$STATE/resume.pt'), 'bytes')"
    cp "$RUN/metrics.csv" "$STATE/metrics.csv"
    # the best weights travel only when they are not the resume point's EMA weights (a plain
    # model file, 2.7 MB): a save adds ~4 MB, or ~7 MB with them
    [ -f "$RUN/best.pt" ] && "$PY" -c "from rhosr.training.checkpoint import best_weights as b; print(b('$RUN/best.pt', '$RUN/last.pt', '$STATE/best.pt'))"
    ls -l "$STATE"
    ;;
status)
    "$PY" - "$RUN" <<'EOF'
import csv, sys, torch
run = sys.argv[1]
tr = torch.load(f"{run}/last.pt", weights_only=True, map_location="cpu")["training"]
rows = [r for r in csv.DictReader(open(f"{run}/metrics.csv")) if r["val_nmae_percent"]]
bundled = torch.load("src/rhosr/models/default.pt", weights_only=True,
                     map_location="cpu")["extra"]["best_val_nmae_percent"]
print(f"step {tr['step']}, {tr['seconds'] / 60:.1f} min, last val {tr['val_nmae_percent']}, "
      f"best val {tr['best_val_nmae_percent']}; {len(rows)} validations; "
      f"bundled model {bundled:.4f} on the same molecules")
EOF
    ;;
*)
    echo "usage: $0 start [MINUTES] | cool [MINUTES] | save | status" >&2; exit 2 ;;
esac
