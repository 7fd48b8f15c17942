"""The media behind result URLs: `/_sandbox/files/<id>.<ext>`, a few bytes of the right type."""

import re

from fastapi import APIRouter, HTTPException, Request, Response

router = APIRouter(prefix="/_sandbox")

# Enough of each format for a client that checks the type or the magic bytes.
PNG_1X1 = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000b49444154789c6360000200000500017a5eab3f0000000049454e44ae426082"
)
CONTENT = {
    "png": ("image/png", PNG_1X1),
    "jpg": ("image/jpeg", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\xff\xd9"),
    "gif": ("image/gif", b"GIF89a\x01\x00\x01\x00\x00\x00\x00;"),
    "bmp": ("image/bmp", b"BM" + bytes(12)),
    "mp4": ("video/mp4", b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom"),
    "mp3": ("audio/mpeg", b"ID3\x04\x00\x00\x00\x00\x00\x00"),
}
NAME = re.compile(r"[A-Za-z0-9_-]+\.(?P<ext>[a-z0-9]+)")


def file_url(request: Request, name: str) -> str:
    """The URL of a result file on the sandbox that is answering `request`."""
    return f"{str(request.base_url).rstrip('/')}/_sandbox/files/{name}"


@router.get("/files/{name}")
async def get_file(name: str) -> Response:
    match = NAME.fullmatch(name)
    if match is None or match["ext"] not in CONTENT:
        raise HTTPException(404, "no such file")
    media_type, content = CONTENT[match["ext"]]
    return Response(content, media_type=media_type)
