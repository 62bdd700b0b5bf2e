"""Seed 003's photo processing as a batchyard processor: apply a named preset to a photo with Pillow.

An item is a photo id (``7``, or a row with a ``photo_id`` column); the photo is the file ``<id>.<ext>`` in
``photos_dir``; the result is written to ``output_dir`` as ``<id>_<preset>.<ext>``. The batch's shared params
are seed 003's ``config``: ``{"preset": "WhiteLayer_v4", "blend": 60}``, plus the curve and sharpening to
finish with. The folders default to ``photos/`` and ``output/`` under ``$PHOTO_PRESETS_DATA``
(``.batchyard/photo_presets``), so a server needs no paths from its clients.

    batchyard run .batchyard/photo_presets/photo_ids.txt --processor photo-preset \\
        --processors examples/photo_presets/processors.py --param preset=WhiteLayer_v4 --param blend=60
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from PIL import Image, ImageFilter, ImageOps, ImageStat
from pydantic import BaseModel, Field, field_validator

import batchyard

PROCESSOR = "photo-preset"
DATA_ENV = "PHOTO_PRESETS_DATA"
SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp")
# Ids name files: letters, digits, '-' and '_' only, so an id can never reach outside the photos folder.
PHOTO_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def data_dir() -> Path:
    """Where the example keeps its photos, outputs and id list (``make_photos.py`` writes there too)."""
    return Path(os.environ.get(DATA_ENV, ".batchyard/photo_presets"))


# -- presets: a name -> what it does to an RGB image, given the strength (``blend``, 0-100) -------------------

Preset = Callable[[Image.Image, float], Image.Image]
PRESETS: dict[str, Preset] = {}


def preset(name: str) -> Callable[[Preset], Preset]:
    def register(fn: Preset) -> Preset:
        PRESETS[name] = fn
        return fn

    return register


@preset("WhiteLayer_v4")
def white_layer(img: Image.Image, blend: float) -> Image.Image:
    """A white layer over the photo at ``blend`` % opacity: every pixel moves that share of the way to white."""
    return Image.blend(img, Image.new("RGB", img.size, "white"), blend / 100)


@preset("Warm_v2")
def warm(img: Image.Image, blend: float) -> Image.Image:
    """Warmer light: red up and blue down by up to a quarter, as ``blend`` % says."""
    k = 0.25 * blend / 100
    r, g, b = img.split()
    return Image.merge("RGB", (r.point(lambda v: min(255, round(v * (1 + k)))), g,
                               b.point(lambda v: round(v * (1 - k)))))


@preset("Mono_v1")
def mono(img: Image.Image, blend: float) -> Image.Image:
    """Black and white, mixed with the colour photo: 100 % is fully grey."""
    return Image.blend(img, ImageOps.grayscale(img).convert("RGB"), blend / 100)


# Tone curves applied after the preset, as 256-entry lookup tables.
CURVES: dict[str, Callable[[int], int]] = {
    "linear": lambda v: v,
    "s-curve": lambda v: round(255 * (3 * (v / 255) ** 2 - 2 * (v / 255) ** 3)),  # smoothstep: more contrast
    "lift-shadows": lambda v: round(255 * (v / 255) ** 0.8),
    "fade": lambda v: round(24 + v * (255 - 48) / 255),  # matte: no pure black or white
}


class PhotoParams(BaseModel):
    """Seed 003's ``config`` (``preset``, ``blend``) with the finishing touches, and where the files are."""

    photo_id: int | str | None = Field(None, description="The photo (default: the item itself is the id).")
    preset: str = Field("WhiteLayer_v4", description=f"One of {', '.join(PRESETS)}.")
    blend: float = Field(60, ge=0, le=100, description="Strength of the preset, in %: the white layer's opacity.")
    curve: Literal["linear", "s-curve", "lift-shadows", "fade"] = "linear"
    sharpen: int = Field(0, ge=0, le=500, description="Unsharp mask strength in % (0: none).")
    quality: int = Field(92, ge=1, le=100, description="JPEG quality of the output.")
    photos_dir: Path = Field(default_factory=lambda: data_dir() / "photos")
    output_dir: Path = Field(default_factory=lambda: data_dir() / "output")

    @field_validator("preset")
    @classmethod
    def _known(cls, name: str) -> str:
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
        return name


def find_photo(photos_dir: Path, photo_id: str) -> Path:
    if not PHOTO_ID.match(photo_id):
        raise batchyard.PermanentError(f"photo id {photo_id!r}: expected letters, digits, '-' or '_'")
    for suffix in SUFFIXES:
        path = photos_dir / f"{photo_id}{suffix}"
        if path.is_file():
            return path
    raise batchyard.PermanentError(f"no photo {photo_id} in {photos_dir} ({', '.join(SUFFIXES)})")


def brightness(img: Image.Image) -> float:
    return round(ImageStat.Stat(img.convert("L")).mean[0], 2)


def apply(img: Image.Image, p: PhotoParams) -> Image.Image:
    """The preset, then the curve, then the sharpening: what one photo goes through."""
    out = PRESETS[p.preset](img.convert("RGB"), p.blend)
    if p.curve != "linear":
        lut = [CURVES[p.curve](v) for v in range(256)]
        out = out.point(lut * 3)
    if p.sharpen:
        out = out.filter(ImageFilter.UnsharpMask(radius=2, percent=p.sharpen, threshold=2))
    return out


@batchyard.processor(PROCESSOR, params=PhotoParams, retry=2, timeout=120,
                     description="Apply a named preset (WhiteLayer_v4, Warm_v2, Mono_v1) to a photo, with a curve "
                                 "and sharpening; write it to the output folder.")
def photo_preset(item: batchyard.Item, ctx: batchyard.Context) -> dict[str, Any]:
    p: PhotoParams = item.params
    photo_id = str(p.photo_id if p.photo_id is not None else item.payload).strip()
    source = find_photo(p.photos_dir, photo_id)
    try:
        with Image.open(source) as img:
            img.load()
    except (OSError, Image.DecompressionBombError) as exc:  # not an image, or a truncated one: no retry helps
        raise batchyard.PermanentError(f"photo {photo_id}: cannot read {source.name}: {exc}") from exc
    out = apply(img, p)
    p.output_dir.mkdir(parents=True, exist_ok=True)
    target = p.output_dir / f"{photo_id}_{p.preset}{source.suffix.lower()}"
    # Written whole or not at all: an item may run twice (at-least-once), and a reader never sees half a file.
    partial = target.with_name(f".{target.name}.{ctx.attempt}.partial")
    out.save(partial, format=img.format or "JPEG", quality=p.quality)
    partial.replace(target)
    return {"photo_id": photo_id, "preset": p.preset, "blend": p.blend, "curve": p.curve, "sharpen": p.sharpen,
            "source": str(source), "output": str(target), "width": out.width, "height": out.height,
            "brightness_before": brightness(img), "brightness_after": brightness(out)}
