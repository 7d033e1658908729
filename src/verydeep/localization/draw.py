"""Draw ranked localisation guesses on a photograph (returns a new PIL image; nothing written).

Example:
    >>> from PIL import Image
    >>> from verydeep.localization.draw import draw_guesses
    >>> from verydeep.localization.protocol import Guess
    >>> out = draw_guesses(Image.new("RGB", (64, 48)), [Guess(0, (4, 4, 40, 40), 0.9)], ["cat"])
    >>> out.size, out.getpixel((4, 20)) != (0, 0, 0)
    ((64, 48), True)
"""

from __future__ import annotations

from PIL import Image, ImageDraw, ImageFont

from .protocol import Guess

COLOURS = [(255, 60, 60), (60, 200, 255), (255, 210, 0), (120, 255, 120), (255, 120, 255)]


def draw_guesses(img: Image.Image, guesses: list[Guess], classes: list[str], k: int = 1) -> Image.Image:
    """The first ``k`` guesses as boxes labelled "rank. class score", best drawn last (on top)."""
    out = img.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    width = max(2, round(min(out.size) / 150))
    font = ImageFont.load_default(size=max(10, round(min(out.size) / 25)))
    for rank in reversed(range(min(k, len(guesses)))):
        g = guesses[rank]
        colour = COLOURS[rank % len(COLOURS)]
        x0, y0, x1, y1 = g.box
        draw.rectangle((x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)), outline=colour, width=width)
        text = f"{rank + 1}. {classes[g.label]} {g.score:.2f}"
        left, top, right, bottom = draw.textbbox((x0 + width, y0 + width), text, font=font)
        draw.rectangle((left - 1, top - 1, right + 1, bottom + 1), fill=colour)
        draw.text((x0 + width, y0 + width), text, fill=(0, 0, 0), font=font)
    return out
