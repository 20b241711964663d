"""``edgeq zoo``: list the reference models and build (train or reuse) one of them."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from edgeq.cli.argtypes import integer
from edgeq.cli.output import print_json, print_table
from edgeq.errors import UsageError
from edgeq.tfimport import import_tensorflow


def register(verbs: Any) -> None:
    zoo = verbs.add_parser("zoo", help="the reference model zoo trained on bundled real data",
                           description="The reference models every test, benchmark and the demo use.")
    actions = zoo.add_subparsers(dest="zoo_action", metavar="ACTION", required=True)

    listing = actions.add_parser("list", help="list the zoo models and whether they are cached")
    listing.add_argument("--cache-dir", help="zoo cache folder (default: $EDGEQ_CACHE_DIR or ~/.cache/edgeq)")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.set_defaults(handler=run_list)

    build = actions.add_parser("build", help="train a zoo model (or reuse the cache) and save it as .keras")
    build.add_argument("name", help="zoo model name (see 'edgeq zoo list')")
    build.add_argument("-o", "--output", required=True, help="where to write the model (.keras)")
    build.add_argument("--epochs", type=integer(1, 10_000),
                       help="override the recipe's epochs (a reduced budget)")
    build.add_argument("--cache-dir", help="zoo cache folder (default: $EDGEQ_CACHE_DIR or ~/.cache/edgeq)")
    build.add_argument("--force", action="store_true", help="retrain even when a cached model exists")
    build.add_argument("--json", action="store_true", help="print the model card as JSON")
    build.set_defaults(handler=run_build)


def run_list(args: argparse.Namespace) -> int:
    from edgeq_models import ZOO, cache_dir
    from edgeq_models.zoo import recipe_key

    root = cache_dir(args.cache_dir) / "zoo"
    rows = []
    for name, entry in ZOO.items():
        key = recipe_key(entry, entry.recipe)
        rows.append({"name": name, "dataset": entry.dataset, "input_shape": list(entry.input_shape),
                     "classes": entry.num_classes, "epochs": entry.recipe.epochs,
                     "cached": (root / f"{name}-{key}").exists(), "description": entry.description})
    if args.json:
        print_json(rows)
    else:
        print_table(["name", "dataset", "input", "epochs", "cached", "description"],
                    [[r["name"], r["dataset"], "x".join(map(str, r["input_shape"])), r["epochs"],
                      "yes" if r["cached"] else "no", r["description"]] for r in rows])
    return 0


def run_build(args: argparse.Namespace) -> int:
    from edgeq.files import copy_atomic
    from edgeq_models.zoo import build, entry

    zoo_entry = entry(args.name)
    output = Path(args.output)
    if output.suffix != ".keras":
        raise UsageError(f"output must end in .keras, got {output}")
    import_tensorflow("edgeq zoo build")
    recipe = zoo_entry.recipe if args.epochs is None else dataclasses.replace(zoo_entry.recipe,
                                                                                epochs=args.epochs)
    built = build(args.name, recipe=recipe, cache=args.cache_dir, force=args.force)
    copy_atomic(built.path, output)
    card = built.card
    if args.json:
        print_json({**card.to_dict(), "output": str(output), "reused": built.reused})
    else:
        how = "reused from cache" if built.reused else f"trained in {card.train_seconds:.1f} s"
        print(f"{card.name}: test top-1 {card.test_accuracy:.2%} on {card.dataset}:test "
              f"({card.params:,} params, {how}) -> {output}")
    return 0
