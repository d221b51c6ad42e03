"""A procedurally generated image world for the offline demo.

Two domains that differ in kind, each made of distinct, non-compositional classes:

* ``objects``: one drawn object (an anchor, a kite, a guitar...) per image, at a random pose,
  scale, position and in random colours, on a cluttered background. Colour never identifies a
  class, so a model has to learn the silhouette.
* ``textures``: a full-frame pattern (striped, chequered, polka-dotted...) at a random scale,
  orientation, phase and in random colours.

Everything is pure numpy/PIL and deterministic given a ``numpy.random.Generator``;
:func:`render_many` derives one generator per image from ``(seed, split, domain, class, index)``
so an image never depends on how many others were asked for.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw

from lightning_unlearn.core.errors import ConfigError, UnknownNameError

#: Bump when any drawing changes: it is part of the demo CLIP's cache key.
WORLD_VERSION = 2
#: Side of every generated image, in pixels.
IMAGE_SIZE = 32
#: Supersampling factor: objects are drawn this many times larger, then box-filtered down,
#: which antialiases edges (a 32 px aliased silhouette loses thin parts like a key's teeth).
_SUPERSAMPLE = 4

DOMAINS: tuple[str, ...] = ("objects", "textures")

# Real CLIP-style prompts: the first template of each domain is its evaluation prompt.
OBJECT_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a picture of a {}.",
    "a drawing of a {}.",
    "a photo of the {}.",
    "a small {} on a cluttered background.",
    "a close-up photo of a {}.",
    "an image of a {}.",
    "a picture of {}.",
    "a {}.",
    "a bright photo of the {}.",
)
TEXTURE_TEMPLATES: tuple[str, ...] = (
    "a photo of a {} texture.",
    "a {} pattern.",
    "a close-up of a {} surface.",
    "a picture of a {} texture.",
    "a {} fabric.",
    "a photo of a {} pattern.",
    "an image of a {} texture.",
    "a {} texture.",
)
TEMPLATES: dict[str, tuple[str, ...]] = {"objects": OBJECT_TEMPLATES, "textures": TEXTURE_TEMPLATES}

# --------------------------------------------------------------------------------------------
# Object shapes, in a canonical frame: x right, y down, the object inside [-1, 1]^2.
# A primitive is (kind, part, points, width): kind "poly" (filled) or "line" (stroked polyline
# of that width), part 0 = main colour, 1 = accent colour, -1 = cut out (a hole).
# --------------------------------------------------------------------------------------------
Primitive = tuple[str, int, np.ndarray, float]


def _pts(*xy: float) -> np.ndarray:
    return np.asarray(xy, dtype=np.float64).reshape(-1, 2)


def _ellipse(cx: float, cy: float, rx: float, ry: float, a0: float = 0.0, a1: float = 360.0,
             n: int = 28, rot: float = 0.0) -> np.ndarray:
    """Points on an ellipse arc; angles in degrees, 90 pointing down (y down)."""
    t = np.radians(np.linspace(a0, a1, n))
    x, y = rx * np.cos(t), ry * np.sin(t)
    c, s = math.cos(math.radians(rot)), math.sin(math.radians(rot))
    return np.stack([cx + c * x - s * y, cy + s * x + c * y], axis=1)


def _circle(cx: float, cy: float, r: float, n: int = 28) -> np.ndarray:
    return _ellipse(cx, cy, r, r, n=n)


def _rect(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return _pts(x0, y0, x1, y0, x1, y1, x0, y1)


def _mirror(points: np.ndarray) -> np.ndarray:
    return points * np.array([-1.0, 1.0])


def _poly(points: np.ndarray, part: int = 0) -> Primitive:
    return ("poly", part, points, 0.0)


def _line(points: np.ndarray, width: float, part: int = 0) -> Primitive:
    return ("line", part, points, width)


def _cut(points: np.ndarray) -> Primitive:
    return ("poly", -1, points, 0.0)


def _anchor() -> list[Primitive]:
    fluke = _pts(0.44, 0.42, 0.74, 0.40, 0.66, 0.12)
    return [
        _line(_pts(0, -0.55, 0, 0.78), 0.13),
        _line(_circle(0, -0.74, 0.15), 0.09),
        _line(_pts(-0.4, -0.38, 0.4, -0.38), 0.11),
        _line(_ellipse(0, 0.12, 0.62, 0.62, 15, 165, n=20), 0.13),
        _poly(fluke), _poly(_mirror(fluke)),
    ]


def _apple() -> list[Primitive]:
    return [
        _poly(_circle(-0.22, 0.15, 0.55)), _poly(_circle(0.22, 0.15, 0.55)),
        _line(_pts(0, -0.35, 0.08, -0.78), 0.09),
        _poly(_ellipse(0.3, -0.62, 0.24, 0.11, rot=-30), 1),
    ]


def _bicycle() -> list[Primitive]:
    frame = 0.075
    return [
        _line(np.vstack([_circle(-0.55, 0.32, 0.38)]), 0.08),
        _line(np.vstack([_circle(0.55, 0.32, 0.38)]), 0.08),
        _line(_pts(-0.55, 0.32, -0.05, 0.32, 0.35, -0.25, -0.3, -0.25, -0.55, 0.32), frame, 1),
        _line(_pts(-0.3, -0.25, -0.05, 0.32), frame, 1),
        _line(_pts(0.55, 0.32, 0.35, -0.25, 0.3, -0.48, 0.48, -0.52), frame, 1),
        _line(_pts(-0.3, -0.25, -0.36, -0.45), frame, 1),
        _line(_pts(-0.5, -0.47, -0.22, -0.47), 0.09, 1),
    ]


def _bottle() -> list[Primitive]:
    return [
        _poly(_pts(-0.32, 0.92, 0.32, 0.92, 0.32, -0.15, 0.13, -0.42, 0.13, -0.75,
                   -0.13, -0.75, -0.13, -0.42, -0.32, -0.15)),
        _poly(_rect(-0.16, -0.94, 0.16, -0.74), 1),
        _poly(_rect(-0.32, 0.12, 0.32, 0.48), 1),
    ]


def _candle() -> list[Primitive]:
    flame = np.vstack([_ellipse(0, -0.55, 0.15, 0.2, -20, 200, n=16), _pts(0, -0.97)])
    return [
        _poly(_rect(-0.22, -0.25, 0.22, 0.92)),
        _poly(_ellipse(-0.22, -0.05, 0.07, 0.16)),
        _line(_pts(0, -0.25, 0, -0.4), 0.05),
        _poly(flame, 1),
    ]


def _car() -> list[Primitive]:
    prims = [
        _poly(_pts(-0.95, 0.28, -0.95, -0.05, -0.55, -0.12, -0.3, -0.45, 0.3, -0.45, 0.55, -0.1,
                   0.95, -0.02, 0.95, 0.28)),
        _cut(_pts(-0.25, -0.35, -0.03, -0.35, -0.03, -0.13, -0.45, -0.13)),
        _cut(_pts(0.04, -0.35, 0.26, -0.35, 0.44, -0.13, 0.04, -0.13)),
    ]
    for cx in (-0.5, 0.5):
        prims += [_poly(_circle(cx, 0.3, 0.24), 1), _cut(_circle(cx, 0.3, 0.08))]
    return prims


def _crown() -> list[Primitive]:
    prims = [
        _poly(_pts(-0.8, 0.5, -0.8, -0.45, -0.4, 0.0, 0, -0.6, 0.4, 0.0, 0.8, -0.45, 0.8, 0.5)),
        _poly(_rect(-0.8, 0.28, 0.8, 0.5), 1),
    ]
    prims += [_poly(_circle(x, y, 0.12), 1) for x, y in ((-0.8, -0.5), (0, -0.66), (0.8, -0.5))]
    return prims


def _fish() -> list[Primitive]:
    return [
        _poly(_ellipse(-0.15, 0, 0.62, 0.36)),
        _poly(_pts(0.32, 0, 0.88, -0.42, 0.88, 0.42)),
        _poly(_pts(-0.3, -0.3, 0.1, -0.3, -0.15, -0.58), 1),
        _cut(_circle(-0.5, -0.08, 0.08)),
    ]


def _flower() -> list[Primitive]:
    prims = [_line(_pts(0, 0.1, 0, 0.96), 0.08, 1), _poly(_ellipse(0.2, 0.62, 0.2, 0.08, rot=-30), 1)]
    for k in range(6):
        a = k * 60.0
        r = math.radians(a)
        prims.append(_poly(_ellipse(0.32 * math.cos(r), -0.25 + 0.32 * math.sin(r), 0.24, 0.13, rot=a)))
    prims.append(_poly(_circle(0, -0.25, 0.14), 1))
    return prims


def _guitar() -> list[Primitive]:
    return [
        _poly(_circle(0, 0.52, 0.4)), _poly(_circle(0, 0.04, 0.29)),
        _cut(_circle(0, 0.18, 0.1)),
        _poly(_rect(-0.07, -0.84, 0.07, -0.2)),
        _poly(_rect(-0.13, -0.99, 0.13, -0.82), 1),
        _poly(_rect(-0.16, 0.6, 0.16, 0.68), 1),
    ]


def _hammer() -> list[Primitive]:
    return [
        _poly(_rect(-0.08, -0.38, 0.08, 0.96), 1),
        _poly(_pts(-0.62, -0.78, 0.42, -0.78, 0.62, -0.64, 0.42, -0.36, -0.62, -0.36)),
    ]


def _heart() -> list[Primitive]:
    t = np.linspace(0, 2 * np.pi, 40)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    return [_poly(np.stack([x, y + 2.5], axis=1) / 17.5)]


def _hourglass() -> list[Primitive]:
    return [
        _poly(_pts(-0.48, -0.76, 0.48, -0.76, 0.07, 0, 0.48, 0.76, -0.48, 0.76, -0.07, 0)),
        _poly(_rect(-0.62, -0.92, 0.62, -0.74), 1), _poly(_rect(-0.62, 0.74, 0.62, 0.92), 1),
        _line(_pts(-0.55, -0.76, -0.55, 0.76), 0.06, 1), _line(_pts(0.55, -0.76, 0.55, 0.76), 0.06, 1),
    ]


def _house() -> list[Primitive]:
    return [
        _poly(_rect(0.33, -0.72, 0.5, -0.3), 1),
        _poly(_rect(-0.6, -0.1, 0.6, 0.86)),
        _poly(_pts(-0.82, -0.04, 0, -0.82, 0.82, -0.04), 1),
        _cut(_rect(-0.14, 0.36, 0.14, 0.86)),
        _cut(_rect(0.24, 0.1, 0.46, 0.3)), _cut(_rect(-0.46, 0.1, -0.24, 0.3)),
    ]


def _key() -> list[Primitive]:
    return [
        _line(_circle(-0.6, 0, 0.26), 0.13),
        _line(_pts(-0.35, 0, 0.92, 0), 0.13),
        _poly(_rect(0.54, 0, 0.68, 0.32)), _poly(_rect(0.76, 0, 0.9, 0.24)),
    ]


def _kite() -> list[Primitive]:
    prims = [
        _poly(_pts(0, -0.92, 0.55, -0.3, 0, 0.42, -0.55, -0.3)),
        _line(_pts(0, -0.92, 0, 0.42), 0.05, 1), _line(_pts(-0.55, -0.3, 0.55, -0.3), 0.05, 1),
        _line(_pts(0, 0.42, 0.14, 0.58, -0.06, 0.74, 0.12, 0.94), 0.045, 1),
    ]
    for x, y in ((0.07, 0.5), (0.03, 0.82)):
        prims.append(_poly(_pts(x - 0.13, y - 0.07, x + 0.13, y + 0.07, x + 0.13, y - 0.07,
                                x - 0.13, y + 0.07), 1))
    return prims


def _ladder() -> list[Primitive]:
    prims = [_line(_pts(-0.36, -0.96, -0.36, 0.96), 0.11), _line(_pts(0.36, -0.96, 0.36, 0.96), 0.11)]
    prims += [_line(_pts(-0.36, y, 0.36, y), 0.08, 1) for y in (-0.7, -0.35, 0.0, 0.35, 0.7)]
    return prims


def _moon() -> list[Primitive]:
    return [_poly(_circle(0, 0, 0.78, n=36)), _cut(_circle(0.38, -0.18, 0.64, n=36))]


def _mug() -> list[Primitive]:
    prims = [
        _line(_ellipse(0.36, 0.1, 0.3, 0.3, -90, 90, n=16), 0.12),
        _poly(_rect(-0.55, -0.45, 0.38, 0.8)),
    ]
    for x in (-0.32, 0.0):
        prims.append(_line(np.stack([x + 0.06 * np.sin(np.linspace(0, 2 * np.pi, 8)),
                                     np.linspace(-0.95, -0.55, 8)], axis=1), 0.05, 1))
    return prims


def _rocket() -> list[Primitive]:
    fin = _pts(0.2, 0.05, 0.52, 0.58, 0.2, 0.44)
    return [
        _poly(_pts(0, 0.42, 0.15, 0.42, 0.0, 0.95, -0.15, 0.42), 1),
        _poly(fin, 1), _poly(_mirror(fin), 1),
        _poly(np.vstack([_ellipse(0, -0.35, 0.22, 0.62, 180, 360, n=16), _pts(0.22, 0.44, -0.22, 0.44)])),
        _cut(_circle(0, -0.2, 0.1)),
    ]


def _star() -> list[Primitive]:
    ang = np.radians(-90 + 36 * np.arange(10))
    rad = np.where(np.arange(10) % 2 == 0, 0.95, 0.4)
    return [_poly(np.stack([rad * np.cos(ang), 0.08 + rad * np.sin(ang)], axis=1))]


def _tree() -> list[Primitive]:
    return [
        _poly(_pts(-0.1, 0.1, 0.1, 0.1, 0.15, 0.96, -0.15, 0.96), 1),
        _poly(_circle(0, -0.42, 0.44)), _poly(_circle(-0.38, -0.08, 0.34)), _poly(_circle(0.38, -0.08, 0.34)),
        _poly(_circle(0, -0.05, 0.3)),
    ]


def _umbrella() -> list[Primitive]:
    top = _ellipse(0, 0.0, 0.92, 0.75, 180, 360, n=24)
    scallops = [_ellipse(x, 0.0, 0.23, 0.12, 0, -180, n=8) for x in (0.69, 0.23, -0.23, -0.69)]
    return [
        _poly(np.vstack([top] + scallops)),
        _line(_pts(0, -0.05, 0, 0.72), 0.07, 1),
        _line(_ellipse(0.16, 0.72, 0.16, 0.16, 180, 0, n=10), 0.07, 1),
    ]


def _airplane() -> list[Primitive]:
    wing = _pts(0.18, -0.05, -0.22, -0.88, -0.42, -0.88, -0.2, -0.05)
    tail = _pts(-0.6, -0.05, -0.82, -0.38, -0.94, -0.38, -0.84, -0.05)
    flip = np.array([1.0, -1.0])
    return [
        _poly(_ellipse(0, 0, 0.95, 0.13)),
        _poly(wing, 1), _poly(wing * flip, 1), _poly(tail, 1), _poly(tail * flip, 1),
    ]


_SHAPES: dict[str, Callable[[], list[Primitive]]] = {
    "airplane": _airplane, "anchor": _anchor, "apple": _apple, "bicycle": _bicycle,
    "bottle": _bottle, "candle": _candle, "car": _car, "crown": _crown, "fish": _fish,
    "flower": _flower, "guitar": _guitar, "hammer": _hammer, "heart": _heart,
    "hourglass": _hourglass, "house": _house, "key": _key, "kite": _kite, "ladder": _ladder,
    "moon": _moon, "mug": _mug, "rocket": _rocket, "star": _star, "tree": _tree,
    "umbrella": _umbrella,
}
OBJECT_CLASSES: tuple[str, ...] = tuple(sorted(_SHAPES))
# Built once: drawing only transforms these arrays.
_OBJECT_PRIMITIVES: tuple[list[Primitive], ...] = tuple(_SHAPES[name]() for name in OBJECT_CLASSES)


# --------------------------------------------------------------------------------------------
# Colours
# --------------------------------------------------------------------------------------------
_LUMA = np.array([0.299, 0.587, 0.114])


_HSV_OFFSETS = np.array([5.0, 3.0, 1.0])


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV -> RGB (all in [0, 1]); returns ``[n, 3]``.

    Uses c = v - v s clip(min(k, 4 - k), 0, 1) with k = (n + 6 h) mod 6, n = 5, 3, 1 for R, G, B.
    """
    k = (_HSV_OFFSETS + 6.0 * h[:, None]) % 6.0
    return v[:, None] * (1.0 - s[:, None] * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0))


def _random_colours(rng: np.random.Generator, n: int, sat: tuple[float, float] = (0.35, 1.0),
                    val: tuple[float, float] = (0.25, 1.0)) -> np.ndarray:
    """``n`` random RGB colours, ``[n, 3]`` in [0, 1]: uniform hue, saturation and value ranges."""
    return _hsv_to_rgb(rng.random(n), rng.uniform(*sat, n), rng.uniform(*val, n))


def _random_colour(rng: np.random.Generator, sat: tuple[float, float] = (0.35, 1.0),
                   val: tuple[float, float] = (0.25, 1.0)) -> np.ndarray:
    return _random_colours(rng, 1, sat, val)[0]


def _contrasting(rng: np.random.Generator, others: Sequence[np.ndarray], min_luma_gaps: Sequence[float]) -> np.ndarray:
    """A random colour whose luma differs from each of ``others`` by its ``min_luma_gaps``.

    Rejection sampling on batches of candidates; the draws only consume ``rng``, so images stay
    deterministic.
    """
    for _ in range(8):
        candidates = _random_colours(rng, 16)
        luma = candidates @ _LUMA
        ok = np.ones(len(candidates), dtype=bool)
        for other, gap in zip(others, min_luma_gaps):
            ok &= np.abs(luma - float(other @ _LUMA)) >= gap
        if ok.any():
            return candidates[int(np.argmax(ok))]
    # Rarely reached (two constraints can conflict); contrast with the first colour only.
    return np.clip(1.0 - others[0], 0.0, 1.0)


def _finish(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Camera-like variation shared by both domains: lighting gradient, contrast, noise."""
    n = img.shape[0]
    ramp = _ramp(n)
    angle = rng.uniform(0, 2 * np.pi)
    strength = rng.uniform(0.0, 0.35)
    light = (math.cos(angle) * strength) * ramp[None, :] + (math.sin(angle) * strength) * ramp[:, None]
    img = img * np.float32(rng.uniform(0.8, 1.15)) + light[..., None]
    img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(rng.uniform(0.01, 0.05))
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


_RAMPS: dict[int, np.ndarray] = {}


def _ramp(n: int) -> np.ndarray:
    if n not in _RAMPS:
        _RAMPS[n] = np.linspace(-0.5, 0.5, n, dtype=np.float32)
    return _RAMPS[n]


# --------------------------------------------------------------------------------------------
# Objects
# --------------------------------------------------------------------------------------------
def _rgb255(colour: np.ndarray) -> tuple[int, int, int]:
    r, g, b = colour.tolist()
    return (int(min(max(r, 0.0), 1.0) * 255 + 0.5), int(min(max(g, 0.0), 1.0) * 255 + 0.5),
            int(min(max(b, 0.0), 1.0) * 255 + 0.5))


def _draw_clutter(draw: ImageDraw.ImageDraw, rng: np.random.Generator, big: int, base: np.ndarray) -> None:
    """Random strokes and dots near the background colour, so the object is not the only edge."""
    unit = big / IMAGE_SIZE
    for _ in range(int(rng.integers(0, 5))):
        fill = _rgb255(base + rng.normal(0, 0.22, 3))
        if rng.random() < 0.6:
            x0, y0, x1, y1 = rng.uniform(-0.1, 1.1, 4) * big
            draw.line((x0, y0, x1, y1), fill=fill, width=int(unit * rng.uniform(0.7, 1.8)))
        else:
            x, y = rng.uniform(0, big, 2)
            r = rng.uniform(0.8, 2.2) * unit
            draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)


def render_object(class_index: int, rng: np.random.Generator, size: int = IMAGE_SIZE) -> np.ndarray:
    """One image of object class ``class_index``: uint8 array ``size x size x 3``.

    Drawn on a supersampled canvas and box-filtered down, which antialiases edges (an aliased
    32 px silhouette loses thin parts like a key's teeth).
    """
    bg_colour = _random_colour(rng, sat=(0.0, 0.8), val=(0.15, 1.0))
    main_colour = _contrasting(rng, [bg_colour], [0.28])
    # the accent must stand out from both the body and the background, or parts vanish
    accent_colour = _contrasting(rng, [bg_colour, main_colour], [0.2, 0.12])
    fills = {0: _rgb255(main_colour), 1: _rgb255(accent_colour), -1: _rgb255(bg_colour)}

    big = size * _SUPERSAMPLE
    canvas = Image.new("RGB", (big, big), fills[-1])
    draw = ImageDraw.Draw(canvas)
    _draw_clutter(draw, rng, big, bg_colour)

    # pose: canonical -> rotate(scale(p)) + centre, then [-1, 1] -> [0, big]
    angle = math.radians(rng.uniform(-25, 25))
    scale = rng.uniform(0.6, 0.9)
    aspect = rng.uniform(0.85, 1.15)
    flip = -1.0 if rng.random() < 0.5 else 1.0
    centre = rng.uniform(-0.14, 0.14, 2)
    c, s = math.cos(angle), math.sin(angle)
    sx, sy = scale * aspect * flip, scale / aspect
    linear = np.array([[c * sx, -s * sy], [s * sx, c * sy]]) * (big / 2)
    offset = (centre + 1.0) * (big / 2)
    px_per_unit = scale * big / 2
    # painter's order; a cut (hole) is painted in the background colour
    for kind, part, points, width in _OBJECT_PRIMITIVES[class_index]:
        xy = (points @ linear.T + offset).ravel().tolist()
        if kind == "poly":
            draw.polygon(xy, fill=fills[part])
        else:
            draw.line(xy, fill=fills[part], width=max(1, int(round(width * px_per_unit))), joint="curve")
    img = np.asarray(canvas.reduce(_SUPERSAMPLE), dtype=np.float32) * (1.0 / 255.0)
    return _finish(img, rng)


# --------------------------------------------------------------------------------------------
# Textures: each maps rotated, scaled coordinates (u, v) to a foreground mask in [0, 1].
# Coordinates are in units of the pattern period; ``rng`` varies the pattern's details.
# --------------------------------------------------------------------------------------------
def _tex_striped(u, v, rng):
    return (np.sin(2 * np.pi * u) > rng.uniform(-0.4, 0.4)).astype(float)


def _tex_zigzagged(u, v, rng):
    f = rng.uniform(0.5, 0.8)
    tri = 2 * np.abs((v * f) % 1.0 - 0.5) - 0.5  # triangle wave in [-0.5, 0.5]
    u = u + rng.uniform(0.7, 1.0) * tri
    return (np.sin(2 * np.pi * u) > rng.uniform(-0.3, 0.3)).astype(float)


def _tex_chequered(u, v, rng):
    return ((np.floor(u) + np.floor(v)) % 2).astype(float)


def _tex_grid(u, v, rng):
    w = rng.uniform(0.1, 0.18)
    du, dv = np.abs(u % 1.0 - 0.5), np.abs(v % 1.0 - 0.5)
    return ((du > 0.5 - w) | (dv > 0.5 - w)).astype(float)


def _tex_polka_dotted(u, v, rng):
    shifted = u + 0.5 * (np.floor(v) % 2) if rng.random() < 0.5 else u
    du, dv = shifted % 1.0 - 0.5, v % 1.0 - 0.5
    return (du * du + dv * dv < rng.uniform(0.2, 0.32) ** 2).astype(float)


def _tex_spiralled(u, v, rng):
    # a centred Archimedean spiral; ``u, v`` are already offset so the centre moves a little
    r = np.hypot(u, v)
    theta = np.arctan2(v, u) / (2 * np.pi)
    return (((r - theta) % 1.0) < rng.uniform(0.4, 0.6)).astype(float)


def _tex_bubbly(u, v, rng):
    # scattered circle outlines of mixed sizes, centred inside the visible frame
    n = int(rng.integers(6, 10))
    cx = rng.uniform(u.min(), u.max(), n)
    cy = rng.uniform(v.min(), v.max(), n)
    rad = rng.uniform(0.3, 0.8, n)
    d = np.abs(np.sqrt((u[..., None] - cx) ** 2 + (v[..., None] - cy) ** 2) - rad)
    return (d.min(-1) < 0.09).astype(float)


def _tex_marbled(u, v, rng):
    # thin, branching veins along the level sets of a turbulent field, over a mottled ground
    field = 0.5 * u
    for _ in range(4):
        fx, fy = rng.normal(0, 0.35, 2)
        field = field + rng.uniform(0.3, 0.6) * np.sin(2 * np.pi * (fx * u + fy * v) + rng.uniform(0, 6.3))
    veins = (np.abs(np.sin(np.pi * field)) < rng.uniform(0.15, 0.25)).astype(float)
    mottle = 0.15 * (1 + np.sin(2 * np.pi * (0.4 * v + 0.3 * field)))
    return np.maximum(veins, mottle)


def _tex_woven(u, v, rng):
    # basket weave: cells alternate between horizontal and vertical bands
    cell = (np.floor(u) + np.floor(v)) % 2
    fu, fv = u % 1.0, v % 1.0
    bands = np.where(cell == 0, fu, fv) * 3.0
    return (np.abs(bands % 1.0 - 0.5) < 0.3).astype(float)


def _tex_cracked(u, v, rng):
    # irregular cell borders (Worley noise): one jittered seed per unit cell; a pixel is on a
    # crack where its nearest and second-nearest seeds (among the 3x3 cells around it) are
    # almost equidistant
    lo = int(np.floor(min(u.min(), v.min()))) - 1
    n = int(np.ceil(max(u.max(), v.max()))) - lo + 2
    jx, jy = rng.uniform(0.1, 0.9, (2, n * n))
    cu, cv = np.floor(u).astype(np.intp) - lo, np.floor(v).astype(np.intp) - lo
    d1 = np.full(u.shape, np.inf)
    d2 = np.full(u.shape, np.inf)
    for du in (-1, 0, 1):
        for dv in (-1, 0, 1):
            iu, iv = cu + du, cv + dv
            cell = iu * n + iv
            dx = u - (iu + lo + jx.take(cell))
            dy = v - (iv + lo + jy.take(cell))
            d = np.sqrt(dx * dx + dy * dy)
            d2 = np.minimum(d2, np.maximum(d1, d))
            d1 = np.minimum(d1, d)
    return ((d2 - d1) < 0.12).astype(float)


_TEXTURES: dict[str, tuple[Callable[..., np.ndarray], tuple[float, float]]] = {
    # name: (pattern, range of pattern periods across the image)
    "bubbly": (_tex_bubbly, (2.0, 2.6)),
    "chequered": (_tex_chequered, (3.0, 5.0)),
    "cracked": (_tex_cracked, (2.8, 3.6)),
    "grid": (_tex_grid, (2.5, 4.0)),
    "marbled": (_tex_marbled, (2.5, 3.5)),
    "polka-dotted": (_tex_polka_dotted, (3.0, 4.5)),
    "spiralled": (_tex_spiralled, (2.5, 3.5)),
    "striped": (_tex_striped, (3.0, 5.0)),
    "woven": (_tex_woven, (1.6, 2.4)),
    "zigzagged": (_tex_zigzagged, (3.0, 4.5)),
}
TEXTURE_CLASSES: tuple[str, ...] = tuple(_TEXTURES)

_GRID_CACHE: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _unit_grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [-0.5, 0.5] of an ``n x n`` image (x, y)."""
    if n not in _GRID_CACHE:
        t = (np.arange(n) + 0.5) / n - 0.5
        _GRID_CACHE[n] = (np.broadcast_to(t[None, :], (n, n)), np.broadcast_to(t[:, None], (n, n)))
    return _GRID_CACHE[n]


def render_texture(class_index: int, rng: np.random.Generator, size: int = IMAGE_SIZE) -> np.ndarray:
    """One image of texture class ``class_index``: uint8 array ``size x size x 3``."""
    pattern, (lo, hi) = _TEXTURES[TEXTURE_CLASSES[class_index]]
    over = 2  # 2x supersampling, then a 2x2 mean, for antialiased pattern edges
    x, y = _unit_grid(size * over)
    periods = rng.uniform(lo, hi)
    angle = rng.uniform(0, np.pi)
    c, s = math.cos(angle), math.sin(angle)
    ox, oy = rng.uniform(-0.12, 0.12, 2)  # shifts spiral centres; a phase for periodic patterns
    u = (c * (x - ox) + s * (y - oy)) * periods
    v = (-s * (x - ox) + c * (y - oy)) * periods
    mask = pattern(u, v, rng)
    mask = mask.reshape(size, over, size, over).mean(axis=(1, 3))
    bg_colour = _random_colour(rng, sat=(0.0, 1.0), val=(0.15, 1.0))
    fg_colour = _contrasting(rng, [bg_colour], [0.25])
    img = bg_colour * (1 - mask[..., None]) + fg_colour * mask[..., None]
    return _finish(img, rng)


# --------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------
CLASSES: dict[str, tuple[str, ...]] = {"objects": OBJECT_CLASSES, "textures": TEXTURE_CLASSES}
_RENDERERS = {"objects": render_object, "textures": render_texture}
SPLITS: tuple[str, ...] = ("train", "val", "test")


def _check_domain(domain: str) -> None:
    if domain not in CLASSES:
        raise UnknownNameError(f"unknown demo domain {domain!r}; expected one of {list(DOMAINS)}")


def render(domain: str, class_index: int, rng: np.random.Generator, size: int = IMAGE_SIZE) -> np.ndarray:
    """Draw one image of class ``class_index`` of ``domain``: uint8 array ``size x size x 3``.

    All randomness (pose, colours, clutter, noise) comes from ``rng``.
    """
    _check_domain(domain)
    if not 0 <= class_index < len(CLASSES[domain]):
        raise ConfigError(f"class_index {class_index} out of range for {domain!r} "
                         f"({len(CLASSES[domain])} classes)")
    return _RENDERERS[domain](class_index, rng, size)


def check_split(split: str) -> None:
    """Reject a split name the world has no stream for (a ``ValueError``)."""
    if split not in SPLITS:
        raise UnknownNameError(f"unknown split {split!r}; expected one of {list(SPLITS)}")


def image_rng(seed: int, split: str, domain: str, class_index: int, index: int) -> np.random.Generator:
    """The generator of image ``index`` of a class in a split; splits never share a stream."""
    check_split(split)
    _check_domain(domain)
    key = [int(seed), SPLITS.index(split), DOMAINS.index(domain), int(class_index), int(index)]
    return np.random.default_rng(np.random.SeedSequence(key))


def render_many(domain: str, labels: Sequence[int], seed: int, split: str,
                size: int = IMAGE_SIZE) -> np.ndarray:
    """Images for ``labels`` (uint8 ``N x size x size x 3``); the k-th image of each class gets
    ``image_rng(seed, split, domain, class, k)``, so growing a set only appends images."""
    counts: dict[int, int] = {}
    out = np.empty((len(labels), size, size, 3), dtype=np.uint8)
    for i, label in enumerate(labels):
        k = counts.get(int(label), 0)
        counts[int(label)] = k + 1
        out[i] = render(domain, int(label), image_rng(seed, split, domain, int(label), k), size)
    return out


def balanced_labels(num_classes: int, num_per_class: int) -> np.ndarray:
    """Labels ``0..C-1``, each ``num_per_class`` times, class-major order."""
    return np.repeat(np.arange(num_classes), num_per_class)


def sample_grid(per_class: int = 6, seed: int = 0, split: str = "test", scale: int = 2) -> Image.Image:
    """A labelled PIL image: ``per_class`` samples of every class of both domains, one row each."""
    rows: list[tuple[str, np.ndarray]] = []
    for domain in DOMAINS:
        for c, name in enumerate(CLASSES[domain]):
            imgs = render_many(domain, [c] * per_class, seed, split)
            rows.append((name, np.concatenate(list(imgs), axis=1)))
    label_w, pad = 84, 2
    cell = IMAGE_SIZE * scale
    width = label_w + per_class * cell
    sheet = Image.new("RGB", (width, len(rows) * (cell + pad)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for r, (name, strip) in enumerate(rows):
        top = r * (cell + pad)
        strip_img = Image.fromarray(strip).resize((per_class * cell, cell), Image.NEAREST)
        sheet.paste(strip_img, (label_w, top))
        draw.text((3, top + cell // 2 - 6), name, fill=(0, 0, 0))
    return sheet


def save_sample_grid(path: str, per_class: int = 6, seed: int = 0) -> None:
    """Write :func:`sample_grid` as a PNG (atomically) to ``path``."""
    from lightning_unlearn.core.io import atomic_path

    with atomic_path(path) as tmp:
        sample_grid(per_class=per_class, seed=seed).save(tmp, format="PNG", optimize=True)
