"""The edgeq reference zoo: small Keras models trained here, deterministically, on bundled real data.

Installed as the ``edgeq_models`` package (the source lives in the repository's ``models/`` folder).
"""

from .zoo import ZOO, TrainRecipe, ZooCard, ZooEntry, build, cache_dir, load_model

__all__ = ["ZOO", "ZooCard", "ZooEntry", "TrainRecipe", "build", "cache_dir", "load_model"]
