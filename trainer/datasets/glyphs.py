"""The built-in ``glyphs`` set: the 62 EMNIST byclass characters rendered from installed fonts.

Nothing is downloaded: the glyphs come from the TrueType fonts bundled with matplotlib (the
DejaVu, STIX and Computer Modern families that actually contain Latin letters and digits) plus
Pillow's own default font. Without matplotlib only Pillow's font is used.

How a sample is made:

1. Each (font, character, stroke weight) is rendered once, white on black, at about twice the
   output resolution, lightly blurred (so it can be resampled without aliasing), and cached
   as a *prototype*. Every font is scaled so its capital ``H`` has the same height, and every
   glyph keeps its place on the font's baseline: "o" is smaller than "O" and sits on the same
   line, "p" descends below it, "l" rises above "I" where the font draws it taller. Size and
   position are the only cues between several upper/lower-case pairs, and they make rendered
   words look like text.
2. Look-alikes are removed: where a glyph of a classic confusable pair renders (almost) like
   a glyph of the other class, in the same font or in another (``I`` and ``l`` in a
   sans-serif, ``0`` and ``O`` in a monospace, a Times ``1`` and a sans ``I``), the fewest
   glyphs that separate the two classes are not drawn. Every class then stays distinguishable
   from the others, as a reader expects of a character set, and a classifier can judge
   generated samples (see :data:`LOOKALIKE_PAIRS`).
3. For a whole batch at once, each output pixel is mapped back into its prototype through a
   random affine transform (rotation, shear, anisotropic scale, translation) plus a smooth
   random displacement field (elastic distortion), and the prototype is sampled bilinearly.
4. A random "levels" adjustment thickens or thins the strokes a little.

Glyphs are centred horizontally on their ink, vertically on the line (baseline at about 72% of
the frame height), white on black like EMNIST, and deterministic given ``seed``. Labels follow
EMNIST byclass order: ``0-9`` are 0..9, ``A-Z`` 10..35, ``a-z`` 36..61.
"""

from __future__ import annotations

import logging
import string
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from ganport.errors import DatasetError

from .base import DataInfo, ImageDataset, choice_option, float_option, int_option

logger = logging.getLogger(__name__)

NAME = "glyphs"
#: EMNIST byclass label order.
CLASS_NAMES: list[str] = list(string.digits + string.ascii_uppercase + string.ascii_lowercase)
DEFAULT_SIZE = 28
DEFAULT_PER_CLASS = 400
FONT_CHOICES = ("all", "pillow")

# Height of a capital "H" as a fraction of the frame. A line spans about 1.35 cap heights
# (ascenders ~1.05 above the baseline, descenders ~0.3 below), which must fit with a margin.
_CAP_FRACTION = 0.54
# The frame's centre lies this many cap heights above the baseline: the middle of the line's
# span, so ascenders and descenders get the same margin.
_LINE_CENTRE = 0.4
# No glyph may be wider than this fraction of the frame (wide "W"/"M" in bold serif fonts
# would otherwise touch the border); only those are shrunk, about their baseline.
_MAX_FRACTION = 0.78
#: The classic typographic confusables. Size and baseline separate the case pairs (``o``/``O``),
#: but these pairs can share one shape at one size: a sans-serif ``I`` is an ``l`` cut 4%
#: shorter, a monospace ``0`` is an ``O`` with a small dot, a Times ``1`` is a serif ``l``.
LOOKALIKE_PAIRS = (("0", "O"), ("1", "I"), ("1", "l"), ("I", "l"))
#: Two glyphs of a pair are look-alikes when they differ by less than this share of their ink
#: (sum of absolute differences over the larger ink sum, at any pair of stroke weights), in the
#: same font or across fonts. Measured on the bundled fonts: DejaVu Sans ``I``/``l`` 0.13, STIX
#: ``1`` against DejaVu Sans ``I`` 0.15, cmss10 ``l`` against DejaVu Serif ``I`` 0.31 (which a
#: trained classifier still confused 70% of the time), against 0.4-1.4 for pairs a reader
#: tells apart by serifs, flags, tails or slashed zeros.
LOOKALIKE_THRESHOLD = 0.35
# Prototypes are rendered at up to this many times the output resolution, then resampled...
_OVERSAMPLE = 2.0
# ...but with a capital H at most this many pixels tall, so large outputs stay cheap in memory
# (prototypes are 22 fonts x 62 glyphs x 2 weights; ~1:1 sampling is still sharp).
_MAX_CAP_PX = 80.0
# Stroke weights rendered per glyph, in output pixels (added on each side of the stroke).
_STROKES = (0.0, 0.5)
# Adobe glyph names of the digits: a font whose "0" is not called "zero" maps digits
# elsewhere (old-style figures in cmmi10, symbols in cmsy10).
_DIGIT_GLYPH_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


# ---------------------------------------------------------------------------------------------
# Fonts


def _expected_glyph_name(char: str) -> str:
    return _DIGIT_GLYPH_NAMES[int(char)] if char.isdigit() else char


def _has_latin_glyphs(path: Path) -> bool:
    """True when the font maps all 62 characters to glyphs that really are those characters.

    A coverage check alone is not enough: symbol fonts (cmsy10, cmex10) and LastResort map the
    ASCII code points to arrows, brackets or placeholder boxes. Their glyph names give them
    away, so we check the name each character maps to.
    """
    from matplotlib import ft2font  # only called when matplotlib imported fine

    try:
        font = ft2font.FT2Font(str(path))
        charmap = font.get_charmap()
        for char in CLASS_NAMES:
            index = charmap.get(ord(char))
            if index is None:
                return False
            name = font.get_glyph_name(index)
            # Fonts without a glyph-name table report "" or "uniXXXX": fall back to coverage.
            if name and not name.startswith("uni") and name != _expected_glyph_name(char):
                return False
        return True
    except (OSError, RuntimeError, ValueError) as exc:  # a broken font must not break the set
        logger.debug("skipping font %s: %s", path, exc)
        return False


@lru_cache(maxsize=1)
def matplotlib_font_paths() -> tuple[Path, ...]:
    """The matplotlib-bundled TrueType fonts that contain proper Latin letters and digits.

    Returns:
        Sorted font paths; empty when matplotlib is not installed.

    Example:
        >>> [p.name for p in matplotlib_font_paths()][:2]   # doctest: +SKIP
        ['DejaVuSans-Bold.ttf', 'DejaVuSans-BoldOblique.ttf']
    """
    try:
        import matplotlib
    except ImportError:
        logger.info("matplotlib is not installed; glyphs use Pillow's default font only")
        return ()
    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    paths = tuple(p for p in sorted(folder.glob("*.ttf")) if _has_latin_glyphs(p))
    logger.debug("glyph fonts: %s", [p.name for p in paths])
    return paths


def _load_font(source: Path | None, size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Open ``source`` at ``size`` pixels; ``None`` means Pillow's default font."""
    if source is not None:
        return ImageFont.truetype(str(source), size)
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1 with FreeType: scalable
    except (TypeError, ImportError, OSError):
        return ImageFont.load_default()  # fixed-size bitmap font; resampling scales it


def _font_sources(fonts: str) -> list[Path | None]:
    """Font files to render from (``None`` = Pillow's default font)."""
    sources: list[Path | None] = [] if fonts == "pillow" else list(matplotlib_font_paths())
    return sources + [None]


# ---------------------------------------------------------------------------------------------
# Prototypes


@dataclass(frozen=True)
class _Prototypes:
    """Rendered glyphs ``[n_fonts, 62, n_strokes, S, S]`` as uint8 0..255, on a common baseline.

    ``cap_px`` is the height of a capital H in prototype pixels (the same for every font).
    ``available[f, k]`` is False where class ``k`` is not drawn from font ``f`` (left out as a
    look-alike, see :func:`_lookalike_mask`).
    """

    images: np.ndarray
    cap_px: float
    font_names: tuple[str, ...]
    available: np.ndarray


def _render(font, char: str, canvas: int, stroke: int) -> Image.Image:
    image = Image.new("L", (canvas, canvas), 0)
    draw = ImageDraw.Draw(image)
    # Every character is drawn from the same origin well inside a large canvas, so rows keep
    # their meaning across characters (the baseline is the same row for all of them).
    draw.text((canvas // 4, canvas // 4), char, font=font, fill=255, stroke_width=stroke, stroke_fill=255)
    return image


@dataclass(frozen=True)
class _Crop:
    """A tight-cropped render and where its top row lies relative to the baseline (pixels)."""

    image: Image.Image
    top: float


def _render_font(source: Path | None, cap_px: float, oversample: float) -> list[list[_Crop]] | None:
    """Tight-cropped renders ``[62][n_strokes]`` of one font scaled to ``cap_px``, or None.

    None means the font turned out unusable (e.g. identical boxes for different characters).
    """
    probe_size = 64
    font = _load_font(source, probe_size)
    box = _render(font, "H", probe_size * 3, 0).getbbox()
    if box is None:
        return None
    # Scale the font so its capital H is cap_px tall (bitmap fonts cannot scale: keep them).
    size = max(4, round(probe_size * cap_px / (box[3] - box[1])))
    font = _load_font(source, size)
    canvas = size * 4
    cap_box = _render(font, "H", canvas, 0).getbbox()
    if cap_box is None:
        return None
    baseline = cap_box[3]  # H sits on the baseline without overshoot
    # Bitmap fonts ignore the size: resample their renders to the wanted cap height instead.
    factor = cap_px / (cap_box[3] - cap_box[1])
    limit = cap_px * _MAX_FRACTION / _CAP_FRACTION
    crops: list[list[_Crop]] = []
    seen: set[bytes] = set()
    for char in CLASS_NAMES:
        renders = []
        for stroke_out in _STROKES:
            stroke = round(stroke_out * oversample)
            image = _render(font, char, canvas, stroke)
            bbox = image.getbbox()
            if bbox is None:
                return None
            renders.append((image.crop(bbox), bbox[1] - baseline))
        # One zoom for all stroke weights of a glyph, so heavier strokes stay heavier.
        zoom = factor * min(1.0, limit / (renders[0][0].size[0] * factor))
        per_stroke = []
        for crop, top in renders:
            if abs(zoom - 1.0) > 0.02:
                crop = crop.resize((max(1, round(crop.size[0] * zoom)), max(1, round(crop.size[1] * zoom))),
                                   Image.Resampling.LANCZOS)
            per_stroke.append(_Crop(crop, top * zoom))
        seen.add(per_stroke[0].image.tobytes())
        crops.append(per_stroke)
    if len(seen) < len(CLASS_NAMES) - 2:  # placeholder-box fonts render everything alike
        return None
    return crops


def _lookalike_mask(stack: np.ndarray, names: list[str]) -> np.ndarray:
    """``available[f, k]``: False where font ``f``'s glyph of class ``k`` is left out as a look-alike.

    The glyphs of each of :data:`LOOKALIKE_PAIRS` (all fonts, both classes) form a graph whose
    edges join look-alikes of different classes. Glyphs are removed greedily, the one with the
    most remaining look-alikes first (ties: the later class, then the later font), until no
    edge is left: few glyphs go, and an odd font's glyph goes rather than every font's glyph
    of the other class. A class is never removed from its last font.
    """
    n_fonts = stack.shape[0]
    available = np.ones(stack.shape[:2], bool)
    inks = stack.astype(np.float32)
    for first, second in LOOKALIKE_PAIRS:
        classes = (CLASS_NAMES.index(first), CLASS_NAMES.index(second))
        # edges[i, j]: font i's glyph of `first` looks like font j's glyph of `second`.
        edges = np.zeros((n_fonts, n_fonts), bool)
        for i in range(n_fonts):
            for j in range(n_fonts):
                for a in inks[i, classes[0]]:
                    for b in inks[j, classes[1]]:
                        if np.abs(a - b).sum() < LOOKALIKE_THRESHOLD * max(a.sum(), b.sum(), 1.0):
                            edges[i, j] = True
        edges &= available[:, classes[0], None] & available[None, :, classes[1]]
        while edges.any():
            degree = (edges.sum(axis=1), edges.sum(axis=0))  # per font: of `first`, of `second`
            side, font = max(((side, font) for side in (0, 1) for font in range(n_fonts)
                              if available[:, classes[side]].sum() > 1 and degree[side][font] > 0),
                             key=lambda item: (degree[item[0]][item[1]], item[0], item[1]), default=(None, None))
            if side is None:
                break  # only last fonts of a class are left in look-alike pairs
            available[font, classes[side]] = False
            if side == 0:
                edges[font, :] = False
            else:
                edges[:, font] = False
            logger.debug("glyphs: %s %r left out (looks like %r of %d font(s))", names[font],
                         CLASS_NAMES[classes[side]], CLASS_NAMES[classes[1 - side]], degree[side][font])
    return available


@lru_cache(maxsize=8)
def _prototypes(image_size: int, fonts: str) -> _Prototypes:
    """Render (once per process) every prototype needed for ``image_size``."""
    cap_px = min(_CAP_FRACTION * image_size * _OVERSAMPLE, _MAX_CAP_PX)
    oversample = cap_px / (_CAP_FRACTION * image_size)
    # Blur of about half an output pixel, so sampling the prototype does not alias.
    blur = ImageFilter.GaussianBlur(radius=0.5 * oversample)
    rendered, names = [], []
    for source in _font_sources(fonts):
        crops = _render_font(source, cap_px, oversample)
        if crops is None:
            logger.warning("font %s cannot render the 62 glyph classes; skipped", source)
            continue
        rendered.append(crops)
        names.append("pillow-default" if source is None else source.stem)
    if not rendered:
        raise DatasetError(f"{NAME}: no usable font found", hint="install matplotlib (pip install 'ganport[train]')")
    # Canvas: the frame's centre maps to the canvas centre, which lies _LINE_CENTRE cap heights
    # above the baseline; the side is large enough for the widest and the deepest glyph.
    baseline_offset = _LINE_CENTRE * cap_px
    reach = 0.0
    for crops in rendered:
        for per_stroke in crops:
            for crop in per_stroke:
                w, h = crop.image.size
                top = crop.top + baseline_offset
                reach = max(reach, w / 2, abs(top), abs(top + h))
    side = 2 * int(np.ceil(reach)) + 8  # zero border so out-of-glyph samples read black
    centre = (side - 1) / 2
    # uint8 storage: a quarter of the memory, and gathers from it are faster.
    stack = np.zeros((len(rendered), len(CLASS_NAMES), len(_STROKES), side, side), np.uint8)
    for f, crops in enumerate(rendered):
        for k, per_stroke in enumerate(crops):
            for s, crop in enumerate(per_stroke):
                w, h = crop.image.size
                canvas = Image.new("L", (side, side), 0)
                # Centred horizontally on the ink, vertically on the line.
                canvas.paste(crop.image, (int(round(centre - w / 2)), int(round(centre + baseline_offset + crop.top))))
                stack[f, k, s] = np.asarray(canvas.filter(blur), np.uint8)
    available = _lookalike_mask(stack, names)
    logger.debug("rendered %d glyph prototypes (%d fonts, side %d, %d look-alikes left out)",
                 stack[..., 0, 0].size, len(names), side, int((~available).sum()))
    return _Prototypes(stack, cap_px, tuple(names), available)


# ---------------------------------------------------------------------------------------------
# Distortion and sampling


def _smooth_fields(rng: np.random.Generator, n: int, size: int, nodes: int = 4) -> np.ndarray:
    """``[n, 2, size, size]`` smooth random fields with unit standard deviation.

    Random values on a coarse ``nodes x nodes`` grid are interpolated with Gaussian bumps
    (two small matrix products per batch). Rows are normalised by their L2 norm so the
    interpolated field keeps unit variance everywhere.
    """
    centres = np.linspace(0, size - 1, nodes)
    pix = np.arange(size)
    spacing = centres[1] - centres[0]
    basis = np.exp(-0.5 * ((pix[:, None] - centres[None, :]) / (0.6 * spacing)) ** 2)
    basis /= np.linalg.norm(basis, axis=1, keepdims=True)
    basis = basis.astype(np.float32)
    coarse = rng.standard_normal((n, 2, nodes, nodes), dtype=np.float32)
    return basis @ coarse @ basis.T


def _sample(protos: np.ndarray, index: np.ndarray, src_x: np.ndarray, src_y: np.ndarray) -> np.ndarray:
    """Bilinearly sample uint8 ``protos[index]`` at float pixel coordinates; returns [0, 1] floats."""
    side = protos.shape[-1]
    flat = protos.reshape(-1)
    x0 = np.clip(np.floor(src_x), 0, side - 2)
    y0 = np.clip(np.floor(src_y), 0, side - 2)
    fx = np.clip(src_x - x0, 0.0, 1.0)
    fy = np.clip(src_y - y0, 0.0, 1.0)
    base = index[:, None, None] * (side * side) + y0.astype(np.int64) * side + x0.astype(np.int64)
    top = flat[base] * (1 - fx) + flat[base + 1] * fx
    bottom = flat[base + side] * (1 - fx) + flat[base + side + 1] * fx
    return (top * (1 - fy) + bottom * fy) * np.float32(1 / 255)


def _make_batch(
    rng: np.random.Generator,
    labels: np.ndarray,
    protos: _Prototypes,
    image_size: int,
    distortion: float,
) -> np.ndarray:
    """Render ``len(labels)`` distorted glyphs as float32 ``[n, 1, size, size]`` in [-1, 1]."""
    n = len(labels)
    n_fonts, n_classes, n_strokes, side, _ = protos.images.shape
    # Each sample's font is drawn among the fonts that draw its class.
    counts = protos.available.sum(axis=0)
    order = np.argsort(~protos.available, axis=0, kind="stable")  # usable fonts first, per class
    font = order[(rng.random(n) * counts[labels]).astype(np.int64), labels]
    stroke = rng.integers(0, n_strokes, n)
    index = (font * n_classes + labels) * n_strokes + stroke

    d = distortion
    angle = np.deg2rad(rng.uniform(-12, 12, n) * d)
    shear = rng.uniform(-0.3, 0.3, n) * d  # x += shear * y: slanted handwriting
    scale = np.exp(rng.uniform(-0.12, 0.08, n) * d)
    aspect = np.exp(rng.uniform(-0.1, 0.1, n) * d)
    shift = rng.uniform(-1.0, 1.0, (n, 2)) * d * image_size / 28
    elastic = _smooth_fields(rng, n, image_size) * (0.9 * d * image_size / 28)
    levels = rng.uniform(-0.35, 0.35, n) * min(d, 1.0)

    # Forward map glyph -> frame is p = R @ Sh @ diag(sx, sy) @ g + t; invert it per sample.
    cos, sin = np.cos(angle), np.sin(angle)
    sx, sy = scale * aspect, scale / aspect
    a, b = cos * sx, (cos * shear - sin) * sy
    c, e = sin * sx, (sin * shear + cos) * sy
    det = a * e - b * c
    ia, ib, ic, ie = e / det, -b / det, -c / det, a / det

    centre = image_size / 2
    grid = np.arange(image_size, dtype=np.float32) + 0.5 - centre
    px = grid[None, None, :] - shift[:, 0, None, None] + elastic[:, 0]
    py = grid[None, :, None] - shift[:, 1, None, None] + elastic[:, 1]
    # Frame pixels -> prototype pixels: the cap height maps from _CAP_FRACTION of the frame.
    zoom = protos.cap_px / (_CAP_FRACTION * image_size)
    gx = (ia[:, None, None] * px + ib[:, None, None] * py) * zoom + (side - 1) / 2
    gy = (ic[:, None, None] * px + ie[:, None, None] * py) * zoom + (side - 1) / 2
    values = _sample(protos.images.reshape(-1, side, side), index, gx.astype(np.float32), gy.astype(np.float32))

    # Levels: raising the black point thins strokes, lowering the white point thickens them.
    low = np.maximum(-levels, 0)[:, None, None]
    high = np.minimum(1 - levels, 1)[:, None, None]
    values = np.clip((values - low) / (high - low), 0.0, 1.0)
    return (values * 2.0 - 1.0).astype(np.float32)[:, None]


def load_glyphs(
    root=None,
    *,
    image_size: int | None = None,
    n: int | None = None,
    seed: int = 0,
    split: str = "train",
    per_class: int = DEFAULT_PER_CLASS,
    distortion: float = 1.0,
    fonts: str = "all",
) -> ImageDataset:
    """Generate the ``glyphs`` set.

    Args:
        root: unused (built-in set).
        image_size: output side, default 28.
        n: total number of samples; default ``62 * per_class``. Classes are interleaved
            (label ``i % 62``), so any ``n >= 62`` covers every class evenly.
        seed: random seed; the same ``(seed, split)`` gives identical arrays.
        split: ``"train"`` or ``"test"`` (an independent random stream).
        per_class: samples per class when ``n`` is not given (default 400 -> 24,800 images).
        distortion: strength of affine, elastic and stroke distortion; 0 gives clean glyphs on
            the baseline, 1 (default) EMNIST-like variation, up to 3.
        fonts: ``"all"`` (matplotlib's fonts + Pillow's) or ``"pillow"`` (Pillow's only).

    Returns:
        ImageDataset with images ``[N, 1, S, S]`` and labels in EMNIST byclass order.

    Example:
        >>> ds = load_glyphs(n=124, seed=1)
        >>> ds.images.shape, ds.info.class_names[10]
        ((124, 1, 28, 28), 'A')
    """
    size = image_size or DEFAULT_SIZE
    per_class = int_option("per_class", per_class, dataset=NAME, low=1)
    distortion = float_option("distortion", distortion, dataset=NAME, low=0.0, high=3.0)
    fonts = choice_option("fonts", fonts, FONT_CHOICES, dataset=NAME)
    total = len(CLASS_NAMES) * per_class if n is None else n
    protos = _prototypes(size, fonts)
    rng = np.random.default_rng([int(seed), 0 if split == "train" else 1, 0x6C795])
    labels = (np.arange(total) % len(CLASS_NAMES)).astype(np.int64)
    # Fixed-size chunks keep memory flat; the rng stream is consumed chunk by chunk, so a given
    # (seed, split, n) is reproducible.
    chunk = max(1, 2_000_000 // (size * size))
    images = np.empty((total, 1, size, size), np.float32)
    for start in range(0, total, chunk):
        part = labels[start : start + chunk]
        images[start : start + len(part)] = _make_batch(rng, part, protos, size, distortion)
    info = DataInfo(NAME, list(CLASS_NAMES), [1, size, size])
    logger.info("glyphs: %d images %dx%d from %d fonts", total, size, size, len(protos.font_names))
    return ImageDataset(images, labels, None, info)


def glyph_fonts(fonts: str = "all") -> list[str]:
    """Names of the fonts the glyphs are rendered from (for reports and tests).

    Example:
        >>> "pillow-default" in glyph_fonts()
        True
    """
    return list(_prototypes(DEFAULT_SIZE, choice_option("fonts", fonts, FONT_CHOICES, dataset=NAME)).font_names)
