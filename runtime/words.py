"""Word rendering: text -> one class label per glyph -> a laid-out image.

Rendering is split in two so the gRPC server can batch the model call with other requests:

1. :func:`plan_text` maps the characters to classes and records the layout (a :class:`WordPlan`
   holding ``z`` and ``labels`` for one batch, one row per glyph);
2. the caller runs the generator on ``plan.z, plan.labels``;
3. :meth:`WordPlan.compose` lays the glyph images out left to right, lines stacked.

Character mapping (see :func:`character_map`): a character uses the class whose name is exactly
that character; when the model has only one case of a letter (an uppercase-only model, EMNIST
"balanced" merged letters), the other case falls back to it; digits map to the digit classes.
Spaces (and other whitespace; a tab counts as four spaces) are gaps with no glyph, ``\\n`` starts a
new line, anything else the model cannot draw is an :class:`~ganport.errors.InvalidInputError`
that names the characters and lists what can be rendered.

Layout (all sizes in output pixels, ``height`` = glyph height):
  * glyphs are optionally inverted, then (``trim=True``, the default) cut horizontally to their ink
    plus one pixel each side, so letters sit close like handwriting instead of in fixed-width
    cells; a glyph without ink keeps a third of its width;
  * glyphs are resized with Pillow to ``height`` (aspect ratio kept);
  * consecutive glyphs are ``spacing`` pixels apart (negative overlaps them, as tight handwriting
    does; each glyph still advances the pen by at least one pixel); overlapping ink is merged with
    ``max`` for light ink on a dark background and ``min`` for dark ink on a light one;
  * a space advances the pen by 40% of ``height`` (plus ``spacing``); lines are 25% of ``height``
    apart; the margin around everything is 15% of ``height`` (at least one pixel);
  * the background colour is the median of the glyphs' border pixels.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from ganport.errors import InvalidInputError
from ganport.runtime.images import resize_to_height

logger = logging.getLogger(__name__)

__all__ = ["WordPlan", "character_map", "plan_text", "summarize_names", "NOISE_MODES"]

#: ``per-glyph``: a new latent per glyph (every stroke differs, like a person writing);
#: ``shared``: one latent for every glyph (uniform "handwriting").
NOISE_MODES = ("per-glyph", "shared")

# Layout proportions, relative to the glyph height (documented in the module docstring).
_SPACE_WIDTH = 0.40
_LINE_GAP = 0.25
_MARGIN = 0.15
_DEFAULT_SPACING = 0.08
# A column holds ink when some pixel differs from the background by more than this (0..255).
_INK_THRESHOLD = 48
_MAX_HEIGHT = 1024


def summarize_names(names: Sequence[str], limit: int = 24) -> str:
    """Describe a list of class names compactly for error messages.

    Runs of three or more consecutive single characters collapse to ``'a'..'z'``.

    Example:
        >>> summarize_names([str(d) for d in range(10)] + ["A", "B", "C", "x"])
        "'0'..'9', 'A'..'C', 'x'"
    """
    parts: list[str] = []
    index = 0
    while index < len(names):
        name = names[index]
        end = index
        if len(name) == 1:
            while (end + 1 < len(names) and len(names[end + 1]) == 1
                   and ord(names[end + 1]) == ord(names[end]) + 1):
                end += 1
        if end - index >= 2:
            parts.append(f"{name!r}..{names[end]!r}")
        else:
            parts.extend(repr(n) for n in names[index:end + 1])
        index = end + 1
    if len(parts) > limit:
        parts = parts[:limit] + [f"... ({len(parts) - limit} more)"]
    return ", ".join(parts)


def character_map(class_names: Sequence[str]) -> dict[str, int]:
    """Map each character a model can draw to its class index.

    Exact single-character class names come first; a letter whose other case has no class of its
    own falls back to the case the model has.

    Example:
        >>> character_map(["A", "B"])
        {'A': 0, 'B': 1, 'a': 0, 'b': 1}
    """
    exact = {name: index for index, name in enumerate(class_names) if len(name) == 1}
    mapping = dict(exact)
    for name, index in exact.items():
        other = name.swapcase()
        if len(other) == 1 and other not in exact:
            mapping.setdefault(other, index)
    return mapping


@dataclass
class WordPlan:
    """A word rendering planned but not yet drawn: one batch of latents and labels plus a layout.

    Attributes:
        text: the normalised text (``\\r\\n`` -> ``\\n``, tabs -> four spaces).
        z: float32 ``[G, latent_dim]``, one row per glyph.
        labels: int64 ``[G]``, the class of each glyph.
        characters: the character each glyph draws.
        lines: per text line, the items left to right: a glyph index into ``z``/``labels``, or
            ``None`` for a space.
        glyph_shape: ``(H, W, C)`` of the model's images.
        height, spacing, invert, trim: layout options (see the module docstring).

    Example:
        >>> plan = gen.plan_word("Hi")                                   # doctest: +SKIP
        >>> image = plan.compose(to_uint8(gen.run(plan.z, plan.labels)))  # doctest: +SKIP
    """

    text: str
    z: np.ndarray
    labels: np.ndarray
    characters: list[str]
    lines: list[list[int | None]]
    glyph_shape: tuple[int, int, int]
    height: int
    spacing: int
    invert: bool = False
    trim: bool = True

    @property
    def n_glyphs(self) -> int:
        """Number of glyphs to generate (characters other than spaces and newlines)."""
        return len(self.characters)

    def compose(self, glyphs: np.ndarray) -> np.ndarray:
        """Lay out the generated glyph images.

        Args:
            glyphs: uint8 ``[G, H, W, C]``, the model's images for ``z``/``labels`` in order.

        Returns:
            uint8 ``[H', W', C]``: the rendered text.
        """
        array = np.asarray(glyphs)
        expected = (self.n_glyphs, *self.glyph_shape)
        if array.dtype != np.uint8 or array.shape != expected:
            raise InvalidInputError(f"compose expects uint8 glyphs of shape {list(expected)}, got "
                                    f"{array.dtype} {list(array.shape)}")
        if self.invert:
            array = 255 - array
        background = _background(array)
        light_ink = float(background.mean()) < 128
        tiles = [resize_to_height(_trim(glyph, background) if self.trim else glyph, self.height)
                 for glyph in array]

        space = max(1, round(_SPACE_WIDTH * self.height))
        margin = max(1, round(_MARGIN * self.height))
        line_gap = round(_LINE_GAP * self.height)
        placements: list[tuple[int, int, int]] = []  # (tile index, top, left)
        right_edge = 0
        for row, items in enumerate(self.lines):
            top = margin + row * (self.height + line_gap)
            pen = margin
            for item in items:
                if item is None:
                    pen += space + self.spacing
                    continue
                placements.append((item, top, pen))
                width = tiles[item].shape[1]
                right_edge = max(right_edge, pen + width)
                pen += max(1, width + self.spacing)
        n_lines = len(self.lines)
        canvas_h = 2 * margin + n_lines * self.height + (n_lines - 1) * line_gap
        canvas_w = max(right_edge, margin) + margin
        canvas = np.empty((canvas_h, canvas_w, array.shape[3]), np.uint8)
        canvas[...] = background
        merge = np.maximum if light_ink else np.minimum
        for item, top, left in placements:
            tile = tiles[item]
            region = canvas[top:top + tile.shape[0], left:left + tile.shape[1]]
            merge(region, tile, out=region)
        return canvas


def _background(glyphs: np.ndarray) -> np.ndarray:
    """Per-channel median of every glyph's border pixels: the colour the canvas is filled with."""
    border = np.concatenate([glyphs[:, 0], glyphs[:, -1], glyphs[:, :, 0], glyphs[:, :, -1]], axis=1)
    return np.median(border.reshape(-1, glyphs.shape[3]), axis=0).round().astype(np.uint8)


def _trim(glyph: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Cut a glyph ``[H, W, C]`` horizontally to its ink columns plus one pixel each side."""
    distance = np.abs(glyph.astype(np.int16) - background.astype(np.int16)).max(axis=(0, 2))
    ink = np.flatnonzero(distance > _INK_THRESHOLD)
    width = glyph.shape[1]
    if ink.size == 0:
        keep = max(1, width // 3)
        start = (width - keep) // 2
        return glyph[:, start:start + keep]
    return glyph[:, max(0, ink[0] - 1):min(width, ink[-1] + 2)]


def _normalise_text(text: object) -> str:
    if not isinstance(text, str):
        raise InvalidInputError(f"text must be a string, got {type(text).__name__}")
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\t", "    ")


def plan_text(text: str, charmap: dict[str, int], *, model_name: str = "model",
              glyph_shape: tuple[int, int, int], latents: Callable[[int], np.ndarray], noise: str = "per-glyph",
              spacing: int | None = None, height: int | None = None, invert: bool = False,
              trim: bool = True) -> WordPlan:
    """Map ``text`` to glyph classes and draw the latents for them (see :class:`WordPlan`).

    Args:
        text: what to write; ``\\n`` starts a new line.
        charmap: from :func:`character_map`.
        model_name: named in error messages.
        glyph_shape: ``(H, W, C)`` of the model's images.
        latents: ``latents(n)`` returns float32 ``[n, latent_dim]`` (seeded by the caller).
        noise: one of :data:`NOISE_MODES`.
        spacing: pixels between glyphs (may be negative); default 8% of ``height``.
        height: glyph height in the output; default the model's image height.
        invert: swap dark and light (``255 - pixel``) before laying out.
        trim: cut empty columns around each glyph.

    Returns:
        The :class:`WordPlan`.
    """
    text = _normalise_text(text)
    if noise not in NOISE_MODES:
        raise InvalidInputError(f"unknown noise mode {noise!r}: valid modes are {', '.join(NOISE_MODES)}")
    if not charmap:
        raise InvalidInputError(f"model {model_name!r} has no single-character classes, so it cannot "
                                "render text", hint="use a model trained on glyphs, EMNIST or digits")
    height = glyph_shape[0] if height is None else _check_int(height, "height", 1, _MAX_HEIGHT)
    spacing = (max(1, round(_DEFAULT_SPACING * height)) if spacing is None
               else _check_int(spacing, "spacing", -height, 4 * height))

    lines: list[list[int | None]] = [[]]
    characters: list[str] = []
    unknown: list[str] = []
    for char in text:
        if char == "\n":
            lines.append([])
        elif char.isspace():
            lines[-1].append(None)
        elif char in charmap:
            lines[-1].append(len(characters))
            characters.append(char)
        elif char not in unknown:
            unknown.append(char)
    if unknown:
        renderable = summarize_names(sorted(charmap), limit=80)
        raise InvalidInputError(
            f"cannot render {', '.join(repr(c) for c in unknown)}: model {model_name!r} has no class for "
            f"{'it' if len(unknown) == 1 else 'them'}",
            hint=f"renderable characters: {renderable}, space and newline")
    if not characters:
        raise InvalidInputError(f"text {text!r} has no characters to render")

    count = len(characters)
    z = latents(count)
    if noise == "shared":
        z = np.repeat(z[:1], count, axis=0)
    labels = np.array([charmap[c] for c in characters], dtype=np.int64)
    logger.debug("planned %d glyphs in %d line(s) for %r", count, len(lines), text)
    return WordPlan(text=text, z=z, labels=labels, characters=characters, lines=lines,
                    glyph_shape=tuple(int(v) for v in glyph_shape), height=height, spacing=spacing,
                    invert=bool(invert), trim=bool(trim))


def _check_int(value: object, name: str, low: int, high: int) -> int:
    """Validate an integer option within ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
        raise InvalidInputError(f"{name} must be an integer in {low}..{high}, got {value!r}")
    return int(value)
