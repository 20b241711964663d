"""``edgeq zoo``: list the reference models and build (train or reuse) one of them."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from edgeq.cli import options
from edgeq.cli.argtypes import integer
from edgeq.cli.output import emit_json, print_table, tables_wanted
from edgeq.errors import UsageError
from edgeq.tfimport import import_tensorflow


def register(verbs: Any) -> None:
    zoo = options.verb_parser(verbs, "zoo", help="the reference model zoo trained on bundled real data",
                              description="The reference models every test, benchmark and the demo use.")
    actions = zoo.add_subparsers(dest="zoo_action", metavar="ACTION", required=True)

    listing = options.verb_parser(actions, "list", help="list the zoo models and whether they are cached",
                                  handler=run_list)
    options.add_cache_dir_option(listing)
    options.add_machine_output_options(listing, "the models")

    build = options.verb_parser(actions, "build", help="train a zoo model (or reuse the cache) and save it as .keras",
                                handler=run_build)
    build.add_argument("name", help="zoo model name (see 'edgeq zoo list')")
    options.add_output_option(build, "where to write the model (.keras)")
    build.add_argument("--epochs", type=integer(1, 10_000),
                       help="override the recipe's epochs (a reduced budget)")
    options.add_cache_dir_option(build)
    options.add_force_option(build, "retrain even when a cached model exists")
    options.add_machine_output_options(build, "the model card")


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
    if tables_wanted(args):
        print_table(["name", "dataset", "input", "epochs", "cached", "description"],
                    [[r["name"], r["dataset"], "x".join(map(str, r["input_shape"])), r["epochs"],
                      "yes" if r["cached"] else "no", r["description"]] for r in rows])
    emit_json(args.json, "edgeq.zoo", {"action": "list", "cache": str(root), "models": rows})
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
    how = "reused from cache" if built.reused else f"trained in {card.train_seconds:.1f} s"
    print(f"{card.name}: test top-1 {card.test_accuracy:.2%} on {card.dataset}:test "
          f"({card.params:,} params, {how}) -> {output}")
    emit_json(args.json, "edgeq.zoo", {"action": "build", "output": str(output), "reused": built.reused,
                                       "card": card.to_dict()})
    return 0
