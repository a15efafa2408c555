#!/usr/bin/env python3
"""Draw the integration's brand images (custom_components/gemma_edge/brand/).

Home Assistant 2026.3 and newer show a custom integration's own icon and logo from its
brand/ folder. The mark is a cut gem (Gemma) with a spark: drawn here at
1024 px and scaled down, so the images can be made again exactly.

    .venv/bin/python scripts/make_brand_images.py
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

BRAND = Path(__file__).resolve().parent.parent / "custom_components" / "gemma_edge" / "brand"
SIZE = 1024
# facets, light to dark: Google-like blues
FACETS = ["#8AB4F8", "#669DF6", "#4285F4", "#1A73E8", "#185ABC", "#174EA6"]


def draw_mark() -> Image.Image:
    image = Image.new("RGBA", (SIZE, SIZE), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    s = SIZE / 16  # a 16-unit grid
    top, girdle, tip = 3 * s, 6.5 * s, 14 * s
    left, right, cx = 1.5 * s, 14.5 * s, 8 * s
    table_l, table_r = 5 * s, 11 * s
    # crown: table and four facets
    draw.polygon([(table_l, top), (table_r, top), (cx, girdle)], fill=FACETS[0])
    draw.polygon([(left, girdle), (table_l, top), (cx, girdle)], fill=FACETS[1])
    draw.polygon([(right, girdle), (table_r, top), (cx, girdle)], fill=FACETS[2])
    # pavilion: four facets down to the tip
    draw.polygon([(left, girdle), (cx - 2.5 * s, girdle), (cx, tip)], fill=FACETS[3])
    draw.polygon([(cx - 2.5 * s, girdle), (cx, girdle), (cx, tip)], fill=FACETS[2])
    draw.polygon([(cx, girdle), (cx + 2.5 * s, girdle), (cx, tip)], fill=FACETS[4])
    draw.polygon([(cx + 2.5 * s, girdle), (right, girdle), (cx, tip)], fill=FACETS[5])
    # a spark on the table: the model at work
    spark = [(12.6, 0.6), (13.0, 1.7), (14.1, 2.1), (13.0, 2.5), (12.6, 3.6), (12.2, 2.5), (11.1, 2.1), (12.2, 1.7)]
    draw.polygon([(x * s, y * s) for x, y in spark], fill="#FBBC04")
    return image


def main() -> None:
    BRAND.mkdir(parents=True, exist_ok=True)
    mark = draw_mark()
    for name, size in (("icon.png", 256), ("icon@2x.png", 512), ("logo.png", 256), ("logo@2x.png", 512)):
        mark.resize((size, size), Image.Resampling.LANCZOS).save(BRAND / name, optimize=True)
        print(f"wrote {BRAND / name} ({size}x{size})")


if __name__ == "__main__":
    main()
