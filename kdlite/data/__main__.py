"""Command line: ``python -m kdlite.data import NAME SOURCE [--root DIR]`` and ``python -m kdlite.data list``."""

from __future__ import annotations

import argparse
import sys

from .cache import DOWNLOADABLE_DATASETS, OFFLINE_DATASETS, data_root, import_dataset, is_cached
from .datasets import describe_dataset, load_dataset


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kdlite.data", description="kdlite's dataset cache, for machines without a network.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    imp = commands.add_parser(
        "import", help="copy a local dataset file or folder into the cache",
        description="Import a local copy of a downloadable dataset into kdlite's cache folder, so that "
                    "load_dataset(NAME) works with no network.")
    imp.add_argument("name", metavar="NAME", help=f"one of: {', '.join(DOWNLOADABLE_DATASETS)}")
    imp.add_argument("source", metavar="SOURCE", help="an .npz file (x_train, y_train, x_test, y_test), the folder "
                     "torchvision writes, or CIFAR's .tar.gz archive")
    imp.add_argument("--root", metavar="DIR", help="the cache folder (default: $KDLITE_DATA or ~/.cache/kdlite)")
    imp.add_argument("--note", default="", help="what the copy is, named in every record made from it "
                     "(e.g. 'JPEG copy')")
    lst = commands.add_parser("list", help="which datasets work offline now",
                              description="List the datasets and whether each works without a network.")
    lst.add_argument("--root", metavar="DIR", help="the cache folder (default: $KDLITE_DATA or ~/.cache/kdlite)")
    args = parser.parse_args(argv)

    if args.command == "list":
        print(f"cache folder: {data_root(args.root)}")
        for name in OFFLINE_DATASETS:
            print(f"  {name:14s} offline (ships with kdlite's dependencies)")
        for name in DOWNLOADABLE_DATASETS:
            state = "offline (in the cache)" if is_cached(name, args.root) else "needs a download or an import"
            print(f"  {name:14s} {state}")
        return 0
    try:
        path = import_dataset(args.name, args.source, root=args.root, note=args.note)
        train, test = load_dataset(args.name, root=args.root, download=False)
    except (ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    classes = len(train.tensors[1].unique())
    print(f"imported {describe_dataset(args.name, train, test, args.root)}: {len(train)} training and {len(test)} "
          f"test samples, images {tuple(train.tensors[0].shape[1:])}, {classes} classes in the training split "
          f"-> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
