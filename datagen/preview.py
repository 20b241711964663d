"""preview.png: a contact sheet with one row per condition, so a person can see what was generated."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

PER_ROW = 8
THUMB = 64
LABEL_WIDTH = 120


def contact_sheet(images: np.ndarray, conditions: Sequence[str], path: Path) -> Path:
    """Up to PER_ROW thumbnails of each condition, in the order conditions first appear."""
    from PIL import Image, ImageDraw

    order = list(dict.fromkeys(conditions))
    sheet = Image.new("RGB", (LABEL_WIDTH + PER_ROW * (THUMB + 4), len(order) * (THUMB + 4) + 4), "white")
    draw = ImageDraw.Draw(sheet)
    for row, name in enumerate(order):
        top = 4 + row * (THUMB + 4)
        draw.text((4, top + THUMB // 2 - 6), name, fill="black")
        members = [i for i, c in enumerate(conditions) if c == name][:PER_ROW]
        for col, index in enumerate(members):
            image = images[index]
            tile = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).convert("RGB")
            tile = tile.resize((THUMB, THUMB), Image.Resampling.NEAREST)
            sheet.paste(tile, (LABEL_WIDTH + col * (THUMB + 4), top))
    sheet.save(path, format="PNG")
    return path
