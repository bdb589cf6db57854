#!/usr/bin/env bash
# Label what the banks still lack, in the order the issues ask for, into stores under
# ~/.cache/rhosr (resumable: run it again and it goes on; nothing the banks hold is
# relabelled).  Run it in the background and add the finished records before you stop:
#
#   nohup scripts/label_queue.sh >> ~/.cache/rhosr/label_queue.log 2>&1 &
#   rhosr bank add data/qm9 ~/.cache/rhosr/qm9 --new-only --note "scripts/label_queue.sh"
#   rhosr bank add data/exotic ~/.cache/rhosr/exotic --new-only --note "scripts/label_queue.sh"
#
# 1. the bundled model's training molecules (the ids in its file);
# 2. more of QM9's training pool (a seeded sample, qm9:train/N) until data/qm9 holds 1500;
# 3. the beyond-QM9 set, data/exotic/structures.xyz (held-out molecules first);
# 4. nitrogen-rich molecules of QM9's training pool (>= 3 N, a seeded sample:
#    scripts/qm9_select.py), NRICH of them (default 600): the test split is 45 % such molecules,
#    the training pool 6 %, and they are the ones the bundled model predicts worst.
set -euo pipefail
cd "$(dirname "$0")/.."
STORE=${STORE:-$HOME/.cache/rhosr}
WORKERS=${WORKERS:-2}

ids=$(python -c "from rhosr.nn.modelfile import read_model_file
from rhosr.inference.predict import default_model_path
ids = read_model_file(default_model_path())['extra']['training_data']['ids']
print(','.join(str(int(i[4:])) for i in ids if i.startswith('qm9_')))")
rhosr generate "qm9:$ids" --out "$STORE/qm9" --skip-in data/qm9 --workers "$WORKERS" --no-progress

have=$(python -c "from rhosr.labels.bank import open_labels
from rhosr.labels.store import Store
import os
n = set(open_labels('data/qm9').ids())
s = os.path.expanduser('$STORE/qm9')
n |= set(Store(s).ids()) if os.path.isdir(s) else set()
print(len(n))")
if [ "$have" -lt 1500 ]; then
    # a seeded sample of the training pool (a larger count extends the same list, and what
    # the bank or the store holds is skipped, so the count only has to be large enough)
    rhosr generate "qm9:train/5000" --out "$STORE/qm9" --skip-in data/qm9 \
        --limit "$((1500 - have))" --workers "$WORKERS" --no-progress
fi

rhosr generate data/exotic/structures.xyz --out "$STORE/exotic" --skip-in data/exotic \
    --workers "$WORKERS" --no-progress

nrich=$(python scripts/qm9_select.py train --element N --at-least 3 --count "${NRICH:-600}")
rhosr generate "$nrich" --out "$STORE/qm9" --skip-in data/qm9 --workers "$WORKERS" --no-progress
