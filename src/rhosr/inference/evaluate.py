"""Accuracy of a model on the records of a store, against the SAD baseline.

Per molecule: NMAE (%) of the prediction against the DFT density, NMAE (%)
of the SAD itself (the fine-mesh SAD, i.e. what an untrained model would
give), the error of the predicted electron count (electrons), and the seconds
for SAD plus inference, through the path of ``rhosr predict``
(:func:`rhosr.inference.predict.predict_on_grid`).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from rhosr.core.density import nmae
from rhosr.core.splits import group_of_id, split_ids
from rhosr.errors import InputError
from rhosr.inference.predict import predict_on_grid
from rhosr.labels.bank import open_labels
from rhosr.nn.device import resolve_device
from rhosr.nn.inputs import Features, ModelInputs, features
from rhosr.nn.modelfile import load_model


def load_for_evaluation(model_or_path, device):
    """``(network, extra of its file, path or None)`` from a model file or a network."""
    if isinstance(model_or_path, torch.nn.Module):
        return model_or_path.to(device).eval(), dict(getattr(model_or_path, "extra", None) or {}), None
    try:
        net = load_model(model_or_path, map_location="cpu")
    except (OSError, ValueError, RuntimeError) as exc:
        raise InputError(f"--model {model_or_path}: {exc}") from None
    return net.to(device).eval(), net.extra, str(model_or_path)


def record_features(record, spec: ModelInputs | None = None) -> Features:
    """The network input of a store record (:func:`rhosr.nn.inputs.features`), with the
    fine SAD (the baseline every evaluation reports)."""
    return features(record.symbols, record.positions, record.grid, record.charge,
                    spec or ModelInputs(), with_fine=True)


def predict_record(net, record, device):
    """(prediction float64, fine SAD float32) of one store record on its fine mesh: the
    inference path of ``rhosr predict`` (:func:`rhosr.inference.predict.predict_on_grid`)."""
    rho, _, sad = predict_on_grid(net, record.symbols, record.positions, record.grid,
                                  record.charge, record.nelectron, device=device, keep_sad=True)
    return rho, sad


def evaluate(model_path_or_model, store, split: str = "val", device="auto",
             val_fraction=None, ids=None, progress: bool = False) -> dict:
    """NMAE of a model on a store's split.

    Parameters
    ----------
    model_path_or_model : model file path or a network from :mod:`rhosr.nn.nets`
    store : rhosr.labels.store.Store or path
    split : "val", "test" or "all" (see :func:`split_ids`)
    device : "auto" (CUDA if available), "cpu", "cuda", ...
    val_fraction : for non-QM9 ids in split "val"; default: the training run's
        (from the model file), else 0.1
    ids : optional explicit list of record ids (overrides ``split``)

    Returns
    -------
    dict with ``molecules``: [{id, atoms, nmae_percent, sad_nmae_percent,
    electron_error, seconds}], ``summary``: {n, mean_nmae_percent,
    median_nmae_percent, max_nmae_percent, mean_sad_nmae_percent}, and
    ``model``, ``store``, ``split``, ``device``.
    """
    dev = resolve_device(device)
    model, extra, model_path = load_for_evaluation(model_path_or_model, dev)
    store = open_labels(store)
    if val_fraction is None:
        val_fraction = (extra.get("training_data") or {}).get("val_fraction", 0.1)
    chosen = list(ids) if ids is not None else split_ids(store.ids(), split, val_fraction)
    if not chosen:
        raise InputError(f"{store.path}: no molecules in split {split!r}"
                         + (" (only QM9 ids and ids like S-test-003 have a test split; "
                            "use --split all)"
                            if split == "test" else ""))
    rows = []
    it = chosen
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(chosen, unit="mol", desc="evaluate")
    for mol_id in it:
        rec = store.read(mol_id)
        t0 = time.perf_counter()
        pred, sad_f = predict_record(model, rec, dev)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        seconds = time.perf_counter() - t0
        ref = rec.rho_dft
        rows.append({
            "id": mol_id,
            "atoms": len(rec.symbols),
            "nmae_percent": 100.0 * nmae(pred, ref),
            "sad_nmae_percent": 100.0 * nmae(sad_f, ref),
            "electron_error": float(np.sum(pred, dtype=np.float64) * rec.grid.dv - rec.nelectron),
            "seconds": seconds,
        })
    err = np.array([r["nmae_percent"] for r in rows])
    sad = np.array([r["sad_nmae_percent"] for r in rows])
    summary = {
        "n": len(rows),
        "mean_nmae_percent": float(err.mean()),
        "median_nmae_percent": float(np.median(err)),
        "max_nmae_percent": float(err.max()),
        "mean_sad_nmae_percent": float(sad.mean()),
        "groups": group_summary(rows),
    }
    return {
        "model": model_path, "preset": extra.get("preset"),
        "store": ", ".join(str(p) for p in getattr(store, "paths", [store.path])),
        "split": split if ids is None else "ids", "device": str(dev),
        "molecules": rows, "summary": summary,
    }


def group_summary(rows) -> dict:
    """{group: {n, mean_nmae_percent, mean_sad_nmae_percent}} of evaluated molecules by
    :func:`rhosr.core.splits.group_of_id` ('qm9', 'S', 'anion', ...; 'other' for the rest),
    in order of first appearance."""
    groups: dict[str, list] = {}
    for r in rows:
        groups.setdefault(group_of_id(r["id"]) or "other", []).append(r)
    return {g: {"n": len(rs), "mean_nmae_percent": float(np.mean([r["nmae_percent"] for r in rs])),
                "mean_sad_nmae_percent": float(np.mean([r["sad_nmae_percent"] for r in rs]))}
            for g, rs in groups.items()}


def format_table(result: dict, max_rows: int = 50) -> str:
    """A terminal table of :func:`evaluate`'s result (at most ``max_rows`` molecules)."""
    rows = result["molecules"]
    width = max([len("id")] + [len(r["id"]) for r in rows[:max_rows]])
    head = f"{'id':<{width}}  {'NMAE %':>8}  {'SAD NMAE %':>10}  {'electrons':>10}  {'seconds':>8}"
    lines = [head, "-" * len(head)]
    for r in rows[:max_rows]:
        lines.append(f"{r['id']:<{width}}  {r['nmae_percent']:8.3f}  {r['sad_nmae_percent']:10.3f}  "
                     f"{r['electron_error']:+10.2e}  {r['seconds']:8.2f}")
    if len(rows) > max_rows:
        lines.append(f"... {len(rows) - max_rows} more (see --json)")
    s = result["summary"]
    lines.append("-" * len(head))
    lines.append(f"{s['n']} molecules ({result['split']}): NMAE mean {s['mean_nmae_percent']:.3f} %, "
                 f"median {s['median_nmae_percent']:.3f} %, max {s['max_nmae_percent']:.3f} %; "
                 f"SAD mean {s['mean_sad_nmae_percent']:.3f} %")
    groups = s.get("groups") or {}
    if len(groups) > 1:
        for g, v in groups.items():
            lines.append(f"  {g}: {v['n']} molecules, NMAE mean {v['mean_nmae_percent']:.3f} %, "
                         f"SAD mean {v['mean_sad_nmae_percent']:.3f} %")
    return "\n".join(lines)
