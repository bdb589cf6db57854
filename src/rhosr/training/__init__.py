"""Training: :func:`rhosr.training.run.train` and its parts.

config      TrainConfig (every option, its default and check) and RESUME, the table of
            what a resume does with each option; no torch
schedule    learning-rate schedules (warm-up + cosine, warm-up + constant); no torch
data        DensityDataset (a molecule as a training sample) and the train/val selection
sampling    what each optimizer step sees, a pure function of (seed, step); store mixes
distributed the torchrun world (ranks, collectives) and its device
checkpoint  checkpoints: model files with a ``training`` entry; slim resume points
loop        loss, freezing, EMA, metrics and the loop's steps over one RunState
run         train(): set-up, loop, finish

Importing this package imports nothing (``rhosr --help`` reads only ``config``).
"""
