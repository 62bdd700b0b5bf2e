"""Make a products CSV like seed 002's catalogue: id, title, category, image URL.

The image is a URL (``https://...``, what a provider fetches itself) or, with ``--images data``, a small PNG
inlined as a base64 data URL, as seed 002 sent its images.
"""

from __future__ import annotations

import argparse
import base64
import csv
import io
import random
from pathlib import Path

CATEGORIES = {
    "tops": ["linen shirt", "silk blouse", "ribbed tank top", "oversized hoodie", "cropped cardigan"],
    "bottoms": ["wide-leg trousers", "pleated midi skirt", "straight jeans", "cargo shorts", "tailored chinos"],
    "dresses": ["wrap dress", "slip dress", "shirt dress", "knitted maxi dress"],
    "outerwear": ["trench coat", "quilted jacket", "wool overcoat", "denim jacket"],
    "shoes": ["leather loafers", "canvas sneakers", "ankle boots", "strappy sandals"],
}
COLOURS = ["black", "ivory", "navy", "olive", "camel", "burgundy", "sage", "charcoal", "sky blue", "rust"]


def png_data_url(rng: random.Random) -> str:
    from PIL import Image

    img = Image.new("RGB", (32, 32), tuple(rng.randrange(256) for _ in range(3)))  # type: ignore[arg-type]
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--out", type=Path, default=Path("products.csv"))
    ap.add_argument("--images", choices=("url", "data"), default="url")
    ap.add_argument("--seed", type=int, default=2)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "title", "category", "image_url"])
        for i in range(1, args.count + 1):
            category = rng.choice(sorted(CATEGORIES))
            title = f"{rng.choice(COLOURS).capitalize()} {rng.choice(CATEGORIES[category])}"
            pid = f"P{i:05d}"
            image = png_data_url(rng) if args.images == "data" else f"https://images.example.com/products/{pid}.jpg"
            w.writerow([pid, title, category, image])
    print(f"{args.count} products in {args.out}")


if __name__ == "__main__":
    main()
