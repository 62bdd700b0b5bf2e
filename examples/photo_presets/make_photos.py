"""Make sample photos for the photo_presets example: ``<id>.jpg`` landscapes, and the list of their ids.

Each photo is drawn from its id alone (a sky gradient, hills, a sun, some trees), so the same command makes
the same photos anywhere. Mid-toned on purpose: every preset has room to move them.

    python examples/photo_presets/make_photos.py --count 40            # into .batchyard/photo_presets/
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from PIL import Image, ImageDraw
from processors import data_dir  # the folder next to this file is on sys.path when run as a script


def landscape(photo_id: int, width: int, height: int) -> Image.Image:
    rng = random.Random(photo_id)
    top = (rng.randint(40, 110), rng.randint(70, 140), rng.randint(120, 200))
    bottom = (rng.randint(150, 220), rng.randint(120, 190), rng.randint(90, 160))
    sky = Image.linear_gradient("L").resize((width, height))
    img = Image.composite(Image.new("RGB", (width, height), bottom), Image.new("RGB", (width, height), top), sky)
    draw = ImageDraw.Draw(img)
    r = rng.randint(height // 14, height // 8)
    cx, cy = rng.randint(r, width - r), rng.randint(r, height // 3)
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(235, 200, 120))
    for layer in range(3):  # hills, darker towards the front
        base = height * (0.55 + 0.12 * layer)
        points = [(0, height)]
        for x in range(0, width + 1, max(1, width // 12)):
            points.append((x, base + rng.uniform(-height * 0.08, height * 0.05)))
        points.append((width, height))
        shade = 110 - 30 * layer
        draw.polygon(points, fill=(shade // 2, shade, shade // 3))
    for _ in range(rng.randint(8, 20)):  # trees
        x, y = rng.randint(0, width), rng.randint(int(height * 0.65), height)
        h = rng.randint(height // 20, height // 8)
        draw.polygon([(x, y - h), (x - h // 3, y), (x + h // 3, y)], fill=(20, rng.randint(50, 90), 30))
    return img


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=40, help="How many photos (ids 1..count).")
    parser.add_argument("--size", default="1600x1200", help="WIDTHxHEIGHT in pixels.")
    parser.add_argument("--data", type=Path, default=None,
                        help="Folder for photos/ and photo_ids.txt (default $PHOTO_PRESETS_DATA or "
                             ".batchyard/photo_presets).")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    data = args.data or data_dir()
    photos = data / "photos"
    photos.mkdir(parents=True, exist_ok=True)
    for photo_id in range(1, args.count + 1):
        landscape(photo_id, width, height).save(photos / f"{photo_id}.jpg", quality=92)
    (data / "photo_ids.txt").write_text("".join(f"{i}\n" for i in range(1, args.count + 1)))
    print(f"wrote {args.count} photos ({width}x{height}) to {photos} and their ids to {data / 'photo_ids.txt'}")


if __name__ == "__main__":
    main()
