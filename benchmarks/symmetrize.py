"""What ``--symmetrize`` buys: accuracy, cost, and how well its spread ranks true errors.

For every record of a split of a store (default: the QM9 test split), predict
the density once plainly and once averaged over the 48 cube symmetries, and
compare both with the DFT label.  Prints per molecule the two NMAEs, the
spread of the 48 members (the error estimate ``rhosr predict --symmetrize``
reports) and the times; then the mean NMAEs, the time ratio, and the Spearman
rank correlation between the spread and the true NMAE of the symmetrised
prediction (and of the plain one).

    PYTHONPATH=src python benchmarks/symmetrize.py STORE --model MODEL [--split test] [--limit N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from rhosr.core.density import nmae  # noqa: E402
from rhosr.core.splits import split_ids  # noqa: E402
from rhosr.inference.predict import predict_on_grid, resolve_model  # noqa: E402
from rhosr.labels.store import Store  # noqa: E402


def spearman(a, b) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("store")
    ap.add_argument("--model", default="default")
    ap.add_argument("--split", default="test", choices=("val", "test", "all"))
    ap.add_argument("--limit", type=int, default=None)
    args = ap.parse_args(argv)
    import torch

    store = Store(args.store)
    ids = split_ids(store.ids(), args.split)[: args.limit]
    net, name = resolve_model(args.model, torch.device("cpu"))
    print(f"{len(ids)} molecules ({args.split}), model {name}, {torch.get_num_threads()} threads")
    print(f"{'molecule':<12} {'plain %':>8} {'sym %':>8} {'spread %':>9} {'plain s':>8} {'sym s':>7}")
    rows = []
    for mol_id in ids:
        rec = store.read(mol_id)
        grid = rec.grid
        args_ = (net, rec.symbols, rec.positions, grid, rec.charge, rec.nelectron)
        t0 = time.perf_counter()
        plain, _, _ = predict_on_grid(*args_)
        t_plain = time.perf_counter() - t0
        t0 = time.perf_counter()
        sym, info, _ = predict_on_grid(*args_, symmetrize=True)
        t_sym = time.perf_counter() - t0
        ref = rec.rho_dft.astype(np.float64)
        row = (100 * nmae(plain, ref), 100 * nmae(sym, ref), info["spread_percent"], t_plain, t_sym)
        rows.append(row)
        print(f"{mol_id:<12} {row[0]:>8.3f} {row[1]:>8.3f} {row[2]:>9.4f} {row[3]:>8.2f} {row[4]:>7.2f}",
              flush=True)
    r = np.array(rows)
    print(f"mean NMAE plain {r[:, 0].mean():.3f} %, symmetrised {r[:, 1].mean():.3f} % "
          f"(median {np.median(r[:, 0]):.3f} / {np.median(r[:, 1]):.3f} %)")
    print(f"time symmetrised / plain: {r[:, 4].sum() / r[:, 3].sum():.1f}x")
    if len(r) >= 3:
        print(f"Spearman(spread, NMAE symmetrised) = {spearman(r[:, 2], r[:, 1]):.3f}; "
              f"Spearman(spread, NMAE plain) = {spearman(r[:, 2], r[:, 0]):.3f}")


if __name__ == "__main__":
    main()
