"""The media behind result URLs, `/_sandbox/files/<name>`: real files a browser shows.

An image (png, jpg, gif, bmp) is drawn when asked, by Pillow: the file's caption (the
prompt, a render's titles) wrapped on a background whose colour comes from the
caption's hash, so one prompt always gives the same image. Every video is
`media/render.mp4` and every sound `media/render.mp3`, shipped with the package
(`media/README.md` says how they were made): rendering a video per job would need
ffmpeg, where one short clip is enough for a preview to play.
"""

import functools
import hashlib
import io
import textwrap
from importlib import resources

from fastapi import APIRouter, HTTPException, Request, Response
from PIL import Image, ImageDraw, ImageFont

from providers.sandbox.state import MediaFile, Sandbox

router = APIRouter(prefix="/_sandbox")

WIDTH, HEIGHT = 640, 360
MARGIN = 32
LABEL_SIZE = 14
TEXT_SIZES = (40, 32, 26, 21, 17, 14)  # the largest whose wrapped lines fit is used
IMAGES = {"png": "PNG", "jpg": "JPEG", "gif": "GIF", "bmp": "BMP"}
SHIPPED = {"mp4": "render.mp4", "mp3": "render.mp3"}
SAMPLE = "the quick brown fox jumps over the lazy dog"  # for how many letters fit a line
MEDIA_TYPES = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "gif": "image/gif",
    "bmp": "image/bmp",
    "mp4": "video/mp4",
    "mp3": "audio/mpeg",
}


def file_url(request: Request, name: str) -> str:
    """The URL of a result file on the sandbox that is answering `request`."""
    return f"{str(request.base_url).rstrip('/')}/_sandbox/files/{name}"


@router.get("/files/{name}")
async def get_file(name: str, state: Sandbox) -> Response:
    file = state.file(name)
    extension = name.rpartition(".")[2]
    if file is None or extension not in MEDIA_TYPES:
        raise HTTPException(404, "no such file")
    return Response(content(file, extension), media_type=MEDIA_TYPES[extension])


def content(file: MediaFile, extension: str) -> bytes:
    if extension in SHIPPED:
        return shipped(SHIPPED[extension])
    return image(file.caption, file.label, IMAGES[extension])


@functools.cache
def shipped(name: str) -> bytes:
    return resources.files("providers.sandbox").joinpath("media", name).read_bytes()


@functools.lru_cache(maxsize=64)
def image(caption: str, label: str, image_format: str) -> bytes:
    """`caption` wrapped to fit a WIDTH by HEIGHT image, `label` in small print below."""
    hue = hashlib.sha256(caption.encode()).digest()[0] * 360 // 256
    picture = Image.new("RGB", (WIDTH, HEIGHT), f"hsl({hue}, 55%, 30%)")  # white text shows
    draw = ImageDraw.Draw(picture)
    label_font = font_of(LABEL_SIZE)
    draw.text((MARGIN, HEIGHT - MARGIN), label, fill=(220, 220, 220), font=label_font, anchor="ld")
    font, lines = layout(caption, WIDTH - 2 * MARGIN, HEIGHT - 3 * MARGIN - LABEL_SIZE)
    draw.multiline_text(
        (MARGIN, MARGIN), "\n".join(lines), fill="white", font=font, spacing=gap(font)
    )
    out = io.BytesIO()
    picture.save(out, image_format)
    return out.getvalue()


def layout(text: str, width: int, height: int) -> tuple[ImageFont.FreeTypeFont, list[str]]:
    """The largest of TEXT_SIZES at which `text` wraps into `height`; at the smallest,
    the lines that fit, the last one cut with an ellipsis."""
    text = " ".join(text.split()) or "(no prompt)"
    for size in TEXT_SIZES:
        font = font_of(size)
        lines = wrapped(text, font, width)
        fitting = max(1, int((height + gap(font)) // (font.getbbox("A")[3] + gap(font))))
        if len(lines) <= fitting:
            return font, lines
    kept = lines[:fitting]
    kept[-1] = kept[-1][: max(len(kept[-1]) - 1, 0)].rstrip() + "…"
    return font, kept


def wrapped(text: str, font: ImageFont.FreeTypeFont, width: int) -> list[str]:
    """`text` in lines no wider than `width` at `font` (words too long are broken)."""
    columns = max(1, int(width * len(SAMPLE) / font.getlength(SAMPLE)))
    while True:
        lines = textwrap.wrap(text, columns)
        if columns == 1 or all(font.getlength(line) <= width for line in lines):
            return lines
        columns -= 1


@functools.cache
def font_of(size: int) -> ImageFont.FreeTypeFont:
    """Pillow's own font at `size`, laid out without libraqm: the same image everywhere."""
    font = ImageFont.load_default(size)
    assert isinstance(font, ImageFont.FreeTypeFont), "Pillow was built without FreeType"
    return font.font_variant(layout_engine=ImageFont.Layout.BASIC)


def gap(font: ImageFont.FreeTypeFont) -> int:
    """Pixels between lines (Pillow adds them below each line's capital height)."""
    return round(font.size * 0.3)
