"""Colour overlays of predicted masks, for one class or several.

One class (an HxW mask): the predicted region tinted red and outlined in green, as always.

Several classes (an HxWxC mask, channel k = class k): class k gets PALETTE[k % len(PALETTE)], the
Okabe-Ito colours (distinguishable with the common colour-vision deficiencies; black left out, it
would vanish on ultrasound), in this fixed order:

    class 0 orange, 1 sky blue, 2 bluish green, 3 yellow, 4 blue, 5 vermillion, 6 reddish purple,
    class 7 orange again, ...

Each class's region is tinted with its colour (alpha 0.4; where classes overlap the tints compound
in class order), then each class's outline is drawn in its full colour, class 0 first.
`legend(num_classes)` draws the colour key (`cmunext-predict` writes it to <out>/legend.png).
"""
from __future__ import annotations

import cv2
import numpy as np

# (name, RGB) of the Okabe-Ito palette without black
PALETTE_RGB: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("orange", (230, 159, 0)),
    ("sky blue", (86, 180, 233)),
    ("bluish green", (0, 158, 115)),
    ("yellow", (240, 228, 66)),
    ("blue", (0, 114, 178)),
    ("vermillion", (213, 94, 0)),
    ("reddish purple", (204, 121, 167)),
)
SINGLE_TINT_BGR = (0, 0, 255)        # one class: red tint
SINGLE_OUTLINE_BGR = (0, 255, 0)     # one class: green outline
ALPHA = 0.4


def class_color(k: int) -> tuple[int, int, int]:
    """BGR colour of class k (palette entry k modulo the palette's length)."""
    r, g, b = PALETTE_RGB[k % len(PALETTE_RGB)][1]
    return b, g, r


def class_color_name(k: int) -> str:
    return PALETTE_RGB[k % len(PALETTE_RGB)][0]


def describe_colors(num_classes: int) -> str:
    """'class 0 orange, class 1 sky blue, ...' for messages."""
    return ", ".join(f"class {k} {class_color_name(k)}" for k in range(num_classes))


def _tint(out: np.ndarray, region: np.ndarray, color, alpha: float) -> None:
    out[region] = (out[region] * (1 - alpha) + np.asarray(color) * alpha).astype(np.uint8)


def _outline(out: np.ndarray, region: np.ndarray, color) -> None:
    contours, _ = cv2.findContours(region.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, tuple(int(c) for c in color), 1)


def overlay(bgr: np.ndarray, mask: np.ndarray, color=SINGLE_TINT_BGR, alpha: float = ALPHA) -> np.ndarray:
    """Tint the predicted region(s) and draw their outlines: an HxW (or HxWx1) mask as one class
    (`color` tint, green outline), an HxWxC mask with one palette colour per class."""
    out = bgr.copy()
    if mask.ndim == 3 and mask.shape[2] > 1:
        regions = [mask[..., k].astype(bool) for k in range(mask.shape[2])]
        for k, region in enumerate(regions):
            _tint(out, region, class_color(k), alpha)
        for k, region in enumerate(regions):
            _outline(out, region, class_color(k))
        return out
    region = mask.reshape(mask.shape[:2]).astype(bool)
    _tint(out, region, color, alpha)
    _outline(out, region, SINGLE_OUTLINE_BGR)
    return out


def legend(num_classes: int, row: int = 24) -> np.ndarray:
    """A BGR image with one row per class: its colour swatch and 'class k (colour name)'."""
    img = np.full((row * num_classes + 8, 240, 3), 255, np.uint8)
    for k in range(num_classes):
        y = 4 + k * row
        cv2.rectangle(img, (6, y + 3), (6 + row - 6, y + row - 3), class_color(k), -1)
        cv2.putText(img, f"class {k} ({class_color_name(k)})", (row + 8, y + row - 7),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return img
