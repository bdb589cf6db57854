"""``rhosr bank``: add labels to a bank, check it, expand its densities."""

from __future__ import annotations

import json
from pathlib import Path

from rhosr.cli.common import Formatter
from rhosr.errors import InputError


def add_bank(sub) -> None:
    p = sub.add_parser(
        "bank", formatter_class=Formatter, help="the label bank: add, check, expand",
        description="A bank (e.g. data/qm9) keeps orbital records in append-only, checksummed "
                    "shards small enough for a git repository; densities are evaluated from the "
                    "orbitals on demand (NumPy only) and cached under ~/.cache/rhosr/densities "
                    "($RHOSR_CACHE). Every command that reads a store reads a bank too.")
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    a = actions.add_parser(
        "add", formatter_class=Formatter, help="append records to a bank (created if missing)",
        description="Append the records of SOURCE (a store of `rhosr generate`, another bank, or a "
                    "folder of orbital label files <id>.npz) as new shards. Refused, with nothing "
                    "written: an id the bank holds (unless --new-only), a record of another level "
                    "of theory, a record without orbitals, an unconverged SCF.")
    a.add_argument("bank", metavar="BANK")
    a.add_argument("sources", metavar="SOURCE", nargs="+")
    a.add_argument("--new-only", action="store_true",
                   help="skip ids the bank already holds instead of refusing the add")
    a.add_argument("--note", default="",
                   help="how these records were made (kept in the add's manifest)")
    a.add_argument("--theory", default=None, metavar="default|FILE.json",
                   help="level of theory of label files (they carry none): 'default' is rhosr "
                        "generate's, or a JSON file")
    c = actions.add_parser("check", formatter_class=Formatter,
                           help="verify checksums, ids and level of theory; print counts",
                           description="Exit status 0 when every shard matches its checksum, no "
                                       "id appears twice and every record has the bank's level "
                                       "of theory; 2 otherwise, one line per problem.")
    c.add_argument("bank", metavar="BANK")
    e = actions.add_parser("expand", formatter_class=Formatter,
                           help="evaluate every density into the cache (training-ready)",
                           description="Evaluate the densities of the bank's records (or --ids) "
                                       "from their orbitals and cache them; cached ones are "
                                       "skipped, so it resumes.")
    e.add_argument("bank", metavar="BANK")
    e.add_argument("--workers", type=int, default=2, help="processes")
    e.add_argument("--ids", nargs="+", default=None, help="only these record ids")


def _theory(arg):
    if arg is None:
        return None
    if arg == "default":
        from rhosr.dft.scf import level_of_theory

        return level_of_theory()
    try:
        return json.loads(Path(arg).read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"--theory {arg}: not 'default' or a readable JSON file ({err})") from None


def run_bank(args) -> int:
    from rhosr.labels.bank import Bank
    from rhosr.labels.bankwrite import add_records, expand
    from rhosr.labels.readers import source_records

    if args.action == "add":
        theory = _theory(args.theory)
        records = [r for src in args.sources for r in source_records(src, theory)]
        man = add_records(args.bank, records, new_only=args.new_only,
                          source=" ".join(args.sources), note=args.note, level_of_theory=theory)
        skipped = len(records) - man["added"]
        where = f" as {man['file']} ({len(man['shards'])} shard(s))" if man["file"] else ""
        print(f"{args.bank}: added {man['added']} records{where}; skipped {skipped} already "
              f"in the bank; {len(Bank(args.bank))} records in all")
        return 0
    bank = Bank(args.bank)
    if args.action == "check":
        problems = bank.check()
        for line in problems:
            print(f"problem: {line}")
        print(bank_line(bank, problems))
        return 2 if problems else 0
    if args.workers < 1:
        raise InputError(f"--workers must be at least 1, not {args.workers}")
    unknown = [i for i in (args.ids or []) if i not in bank]
    if unknown:
        raise InputError(f"{args.bank}: no record {unknown[0]!r}")
    res = expand(bank, ids=args.ids, workers=args.workers)
    print(f"{args.bank}: {res['evaluated']} densities evaluated, {res['cached']} already cached, "
          f"{res['seconds']:.1f} s")
    return 0


def bank_line(bank, problems=()) -> str:
    """One summary line of a bank: records, shards, bytes, state."""
    shards = [s for m in bank.manifests for s in m["shards"]]
    size = sum(s["bytes"] for s in shards)
    state = f"{len(problems)} problem(s)" if problems else "ok"
    return (f"{bank.path}: {len(bank)} records in {len(shards)} shards, {size / 1e6:.1f} MB "
            f"({size / max(len(bank), 1) / 1e3:.1f} KB per record); {state}")
