"""The shapes world: synthetic scenes whose every attribute is known, and a reader that recovers them.

One object on a plain grey background. The caption names the object's colour, shape and position
("a red circle on the left"); the background shade, the object's size and a little jitter of its place are
details the caption never names. Because the truth of every scene is known, an edit on this world can be
measured: ``read`` recovers colour, shape, position, size and background from pixels, and a colour that is
none of the four (e.g. a red/blue blend an edit half-way produces) reads as ``None``, a failure.

Torch-free (numpy and pillow); imports nothing from ComfyUI.
"""
from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SIZE = 128  # pixels per side of a scene
COLOURS = {  # name -> RGB in [0, 1]
    "red": (0.90, 0.12, 0.10),
    "green": (0.10, 0.75, 0.15),
    "blue": (0.12, 0.25, 0.92),
    "yellow": (0.95, 0.85, 0.10),
}
SHAPES = ("square", "circle", "triangle")
POSITIONS = ("left", "right", "top", "bottom")
# centre of the object for each position, as a fraction of the side
_CENTRES = {"left": (0.27, 0.5), "right": (0.73, 0.5), "top": (0.5, 0.27), "bottom": (0.5, 0.73)}
_PLACE_WORDS = {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom"}
BACKGROUND_RANGE = (0.25, 0.75)  # grey level of the background
SIZE_RANGE = (0.13, 0.19)  # half-extent of the object, as a fraction of the side
JITTER = 0.04  # largest shift of the object's centre, as a fraction of the side
_SUPERSAMPLE = 4  # anti-aliasing: drawn at 4x, box-filtered down

# Caption combinations never shown in training: every colour, shape and position occurs in them, each
# combination differs from the others, and every held-out scene is one attribute away from trained ones.
HELD_OUT = (
    ("red", "circle", "left"), ("green", "square", "right"), ("blue", "triangle", "top"),
    ("yellow", "circle", "bottom"), ("red", "triangle", "bottom"), ("green", "circle", "top"),
    ("blue", "square", "left"), ("yellow", "triangle", "right"),
)
ALL_COMBOS = tuple(itertools.product(COLOURS, SHAPES, POSITIONS))
TRAIN_COMBOS = tuple(c for c in ALL_COMBOS if c not in HELD_OUT)


@dataclass(frozen=True)
class Scene:
    colour: str
    shape: str
    position: str
    background: float  # grey level in [0, 1]
    size: float  # half-extent, fraction of the side
    dx: float  # jitter of the centre, fraction of the side
    dy: float

    @property
    def caption(self) -> str:
        return caption(self.colour, self.shape, self.position)


def caption(colour: str, shape: str, position: str) -> str:
    """The scene's text: ``caption("red", "circle", "left") == "a red circle on the left"``."""
    return f"a {colour} {shape} {_PLACE_WORDS[position]}"


def parse_caption(text: str) -> tuple[str, str, str] | None:
    """(colour, shape, position) of a caption this world writes, or None."""
    for combo in ALL_COMBOS:
        if caption(*combo) == text.strip():
            return combo
    return None


def sample_scene(colour: str, shape: str, position: str, rng: np.random.Generator) -> Scene:
    """A scene with the named attributes and unnamed details drawn from ``rng``."""
    return Scene(colour, shape, position,
                 background=float(rng.uniform(*BACKGROUND_RANGE)), size=float(rng.uniform(*SIZE_RANGE)),
                 dx=float(rng.uniform(-JITTER, JITTER)), dy=float(rng.uniform(-JITTER, JITTER)))


def scene_for_seed(colour: str, shape: str, position: str, seed: int) -> Scene:
    return sample_scene(colour, shape, position, np.random.default_rng(int(seed)))


def random_scenes(n: int, seed: int, combos=TRAIN_COMBOS) -> list[Scene]:
    """``n`` scenes with combinations drawn uniformly from ``combos``, reproducible from ``seed``."""
    rng = np.random.default_rng(int(seed))
    picks = rng.integers(0, len(combos), size=n)
    return [sample_scene(*combos[i], rng) for i in picks]


def centre(scene: Scene) -> tuple[float, float]:
    """The object's centre (x, y) as a fraction of the side: its position's place plus the jitter."""
    fx, fy = _CENTRES[scene.position]
    return fx + scene.dx, fy + scene.dy


def render(scene: Scene, size: int = SIZE) -> np.ndarray:
    """The scene as float32 RGB in [0, 1], shape (size, size, 3)."""
    big = size * _SUPERSAMPLE
    grey = int(round(scene.background * 255))
    img = Image.new("RGB", (big, big), (grey, grey, grey))
    cx, cy = (c * big for c in centre(scene))
    r = scene.size * big
    fill = tuple(int(round(c * 255)) for c in COLOURS[scene.colour])
    draw = ImageDraw.Draw(img)
    if scene.shape == "square":
        s = r * 0.9  # same area impression as the circle
        draw.rectangle((cx - s, cy - s, cx + s, cy + s), fill=fill)
    elif scene.shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    else:  # an upward triangle inscribed in the circle of radius r*1.15
        t = r * 1.15
        draw.polygon([(cx, cy - t), (cx + t * 0.866, cy + t * 0.5), (cx - t * 0.866, cy + t * 0.5)], fill=fill)
    img = img.resize((size, size), Image.Resampling.BOX)
    return np.asarray(img, dtype=np.float32) / 255.0


def render_batch(scenes: list[Scene], size: int = SIZE) -> np.ndarray:
    """(N, size, size, 3) float32 in [0, 1] -- ComfyUI's IMAGE layout."""
    return np.stack([render(s, size) for s in scenes])


# ---------------------------------------------------------------------------------------------------
# The reader.

_SATURATION = 0.30  # a pixel is object when max(RGB) - min(RGB) exceeds this (the background is grey)
_MIN_AREA = 0.01  # the object covers at least 1 % of the picture, or there is none
_COLOUR_TOLERANCE = 0.22  # mean object RGB further than this (max abs) from every colour: a blend, a failure


@dataclass(frozen=True)
class Reading:
    colour: str | None  # None: no object, or a colour that is none of the four
    shape: str | None
    position: str | None
    size: float  # sqrt(object area) / side: 0 when there is no object
    background: float  # grey level (median of the non-object pixels)
    centre: tuple[float, float]  # (x, y) fraction of the side
    background_spread: float = 0.0  # standard deviation of the grey level of the background away from the object

    def matches(self, colour: str, shape: str, position: str) -> dict[str, bool]:
        return {"colour": self.colour == colour, "shape": self.shape == shape, "position": self.position == position}


def read(image: np.ndarray) -> Reading:
    """Recover the attributes of a scene from pixels (H, W, 3) in [0, 1]."""
    img = np.asarray(image, dtype=np.float32)
    h, w = img.shape[:2]
    saturation = img.max(axis=2) - img.min(axis=2)
    mask = saturation > _SATURATION
    background = float(np.median(img[~mask].mean(axis=1))) if (~mask).any() else 0.0
    spread = _background_spread(img, saturation)
    area = float(mask.mean())
    if area < _MIN_AREA:
        return Reading(None, None, None, 0.0, background, (0.5, 0.5), spread)
    # Soft coverage: a pixel's share of the object from its saturation relative to the object's own, so that
    # edges blurred or blocky (a decoder's) count by how much of the object they hold.
    full = float(np.percentile(saturation[mask], 90))
    cover = np.clip((saturation - 0.05) / max(full - 0.05, 1e-6), 0.0, 1.0)
    core = cover > 0.8
    area = float(cover.mean())
    ys, xs = np.nonzero(cover > 0.5)
    weights = cover[ys, xs]
    cx, cy = float((xs * weights).sum() / weights.sum() / w), float((ys * weights).sum() / weights.sum() / h)
    mean = img[core].mean(axis=0) if core.any() else img[mask].mean(axis=0)
    name, dist = min(((n, float(np.abs(mean - np.array(c)).max())) for n, c in COLOURS.items()),
                     key=lambda t: t[1])
    colour = name if dist <= _COLOUR_TOLERANCE else None
    dx, dy = cx - 0.5, cy - 0.5
    if abs(dx) >= abs(dy):
        position = "left" if dx < 0 else "right"
    else:
        position = "top" if dy < 0 else "bottom"
    # shape from how much of its bounding box the object fills: square 1, circle pi/4, triangle 1/2; the box's
    # sides are the widest row and the tallest column of the coverage (sums: robust to blurred edges)
    fill = cover.sum() / max(float(cover.sum(axis=1).max() * cover.sum(axis=0).max()), 1.0)
    shape = "square" if fill > 0.9 else "circle" if fill > 0.72 else "triangle"
    return Reading(colour, shape, position, float(np.sqrt(area)), background, (float(cx), float(cy)), spread)


_CLEAR = 0.05  # background spread: pixels at most this saturated ...
_MARGIN = 4  # ... and this many pixels away from any more saturated one (the object's blurred edge)


def _background_spread(img: np.ndarray, saturation: np.ndarray) -> float:
    """The background's texture: the standard deviation of the grey level over the pixels clear of the object
    (a flat render gives 0; a checker or mottle left by a sampler gives more)."""
    near = saturation > _CLEAR
    grown = near.copy()
    for dy in range(-_MARGIN, _MARGIN + 1):
        for dx in range(-_MARGIN, _MARGIN + 1):
            grown |= np.roll(np.roll(near, dy, axis=0), dx, axis=1)
    clear = ~grown
    if clear.sum() < 16:
        return 0.0
    return float(img[clear].mean(axis=1).std())


def true_size(scene: Scene) -> float:
    """What ``read`` measures as size for a perfect render of ``scene`` (sqrt of the covered fraction)."""
    r = scene.size
    area = {"square": (2 * 0.9 * r) ** 2, "circle": np.pi * r * r,
            "triangle": 0.5 * (2 * 1.15 * r * 0.866) * (1.5 * 1.15 * r)}[scene.shape]
    return float(np.sqrt(area))


def size_as_drawn(scene: Scene, shape_read: str | None, fallback: str) -> float:
    """The size ``read`` should find for ``scene``'s object drawn in the shape an output shows (``shape_read``, or
    ``fallback`` when no shape was read): a triangle of the same extent covers less than a circle, so an edit's
    size is judged apart from its shape (bench/edit_quality.py, tests/test_shapes_model.py)."""
    return true_size(dataclasses.replace(scene, shape=shape_read if shape_read in SHAPES else fallback))


def reader_accuracy(n: int = 400, seed: int = 12345) -> dict[str, float]:
    """Fraction of true renders (all combinations) on which the reader recovers each attribute."""
    scenes = random_scenes(n, seed, ALL_COMBOS)
    hits = {"colour": 0, "shape": 0, "position": 0}
    size_err = bg_err = 0.0
    for s in scenes:
        r = read(render(s))
        for k, ok in r.matches(s.colour, s.shape, s.position).items():
            hits[k] += ok
        size_err = max(size_err, abs(r.size - true_size(s)))
        bg_err = max(bg_err, abs(r.background - s.background))
    out = {k: v / n for k, v in hits.items()}
    out.update(size_max_error=size_err, background_max_error=bg_err)
    return out
