#!/usr/bin/env bash
# Label generation for training the bundled model (run in the background with nohup);
# resumable: running it again continues where it stopped.
exec rhosr generate qm9:val/40 qm9:train/5000 qm9:test/100 --out ~/.cache/rhosr/qm9 --workers 2 --no-progress
