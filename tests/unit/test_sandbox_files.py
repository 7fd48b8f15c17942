"""The sandbox's result files are real media: an image that shows its prompt, a video
of a few seconds, a sound; and only the files a job named are served."""

import io
import json
import struct
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from PIL import Image

from providers.sandbox import SandboxConfig, files
from tests.unit.test_sandbox import (
    LATENCY,
    kie_record,
    kie_submit,
    poll,
    render,
    render_status,
    sandbox,
)

Json = dict[str, Any]
SIZE = (640, 360)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with sandbox(SandboxConfig(job_latency=LATENCY)) as client:
        yield client


async def fetch(client: httpx.AsyncClient, url: str, media_type: str) -> bytes:
    response = await client.get(url)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == media_type
    return response.content


async def gpt4o_image(client: httpx.AsyncClient, prompt: str, variants: int = 1) -> list[str]:
    task_id = await kie_submit(
        client, "gpt4o-image/generate", {"prompt": prompt, "size": "1:1", "nVariants": variants}
    )
    data = await poll(
        lambda: kie_record(client, "gpt4o-image/record-info", task_id),
        lambda d: d["status"] == "SUCCESS",
    )
    urls: list[str] = data["response"]["resultUrls"]
    return urls


def decoded(content: bytes, image_format: str) -> Image.Image:
    image = Image.open(io.BytesIO(content))
    assert image.format == image_format
    image.load()
    return image


async def test_an_image_shows_its_prompt_the_same_way_each_time(client: httpx.AsyncClient) -> None:
    [cat] = await gpt4o_image(client, "Key visual for: why cats sit in boxes")
    [again] = await gpt4o_image(client, "Key visual for: why cats sit in boxes")
    [dog] = await gpt4o_image(client, "Key visual for: why dogs dig holes")

    image = decoded(await fetch(client, cat, "image/png"), "PNG")
    assert image.size == SIZE
    # A background and the text drawn on it in white, smoothed: many shades, not one colour.
    colours = image.convert("RGB").getcolors(maxcolors=SIZE[0] * SIZE[1])
    assert colours is not None and len(colours) > 10
    assert (255, 255, 255) in {colour for _, colour in colours}
    assert len(await fetch(client, cat, "image/png")) < 100_000
    assert await fetch(client, again, "image/png") == await fetch(client, cat, "image/png")
    assert await fetch(client, dog, "image/png") != await fetch(client, cat, "image/png")


async def test_a_long_prompt_and_each_variant_still_make_an_image(
    client: httpx.AsyncClient,
) -> None:
    long_prompt = "Key visual for: " + "a box, a cat, an afternoon in the sun; " * 80
    variants = await gpt4o_image(client, long_prompt, variants=2)
    market = await kie_submit(
        client, "jobs/createTask", {"model": "flux-kontext", "input": {"prompt": "x" * 400}}
    )
    data = await poll(
        lambda: kie_record(client, "jobs/recordInfo", market), lambda d: d["state"] == "success"
    )

    urls = [*variants, *json.loads(data["resultJson"])["resultUrls"]]
    images = [decoded(await fetch(client, url, "image/png"), "PNG") for url in urls]
    assert [image.size for image in images] == [SIZE] * 3
    # The variants' small print says which one each is.
    assert images[0].tobytes() != images[1].tobytes()


def boxes(data: bytes) -> list[tuple[str, bytes]]:
    """The ISO base media file format boxes at the top of `data`: (type, payload)."""
    found, offset = [], 0
    while offset + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        header = 8
        if size == 1:
            (size,) = struct.unpack(">Q", data[offset + 8 : offset + 16])
            header = 16
        elif size == 0:
            size = len(data) - offset
        assert size >= header, f"box {kind!r} has size {size}"
        found.append((kind.decode("latin-1"), data[offset + header : offset + size]))
        offset += size
    assert offset == len(data), "the last box runs past the end"
    return found


def mp4_duration(video: bytes) -> float:
    """Seconds, from the movie header (`moov`/`mvhd`)."""
    moov = dict(boxes(video))["moov"]
    mvhd = dict(boxes(moov))["mvhd"]
    if mvhd[0] == 1:  # version 1: 64-bit times
        timescale, duration = struct.unpack(">IQ", mvhd[20:32])
    else:
        timescale, duration = struct.unpack(">II", mvhd[12:20])
    return float(duration / timescale)


async def test_a_video_is_a_real_mp4_of_a_few_seconds(client: httpx.AsyncClient) -> None:
    veo_id = await kie_submit(client, "veo/generate", {"prompt": "a cat"})
    veo = await poll(
        lambda: kie_record(client, "veo/record-info", veo_id), lambda d: d["successFlag"] == 1
    )
    render_id = await render(client)
    rendered = await poll(lambda: render_status(client, render_id), lambda r: r["status"] == "done")

    video = await fetch(client, veo["response"]["resultUrls"][0], "video/mp4")
    assert await fetch(client, rendered["url"], "video/mp4") == video
    kinds = [kind for kind, _ in boxes(video)]
    assert kinds[0] == "ftyp" and dict(boxes(video))["ftyp"][:4] in (b"isom", b"mp42")
    # The index before the frames: a browser can start playing before it has it all.
    assert kinds.index("moov") < kinds.index("mdat")
    assert b"avc1" in dict(boxes(video))["moov"], "H.264, which every browser plays"
    assert 1 < mp4_duration(video) < 10
    assert 1_000 < len(video) < 100_000


async def test_a_video_decodes_into_frames_when_pyav_is_installed(
    client: httpx.AsyncClient,
) -> None:
    av = pytest.importorskip("av")
    render_id = await render(client)
    rendered = await poll(lambda: render_status(client, render_id), lambda r: r["status"] == "done")
    video = await fetch(client, rendered["url"], "video/mp4")

    with av.open(io.BytesIO(video)) as container:
        [stream] = container.streams.video
        frames = list(container.decode(stream))
    assert stream.codec_context.name == "h264"
    assert (frames[0].width, frames[0].height) == SIZE
    assert frames[-1].time > 1


async def finished_render(client: httpx.AsyncClient, edit: Json) -> Json:
    render_id = await render(client, edit)
    return await poll(lambda: render_status(client, render_id), lambda r: r["status"] == "done")


async def test_a_renders_image_formats_poster_and_thumbnail_show_its_titles(
    client: httpx.AsyncClient,
) -> None:
    title = {"asset": {"type": "title", "text": "Why cats sit in boxes"}, "start": 0, "length": 4}
    video = {"asset": {"type": "video", "src": "x"}, "start": 0, "length": 4}
    edit: Json = {"timeline": {"tracks": [{"clips": [title]}, {"clips": [video]}]}}
    gif = await finished_render(
        client, {**edit, "output": {"format": "gif", "poster": {}, "thumbnail": {}}}
    )
    png = await finished_render(client, {**edit, "output": {"format": "png"}})
    bmp = await finished_render(client, {**edit, "output": {"format": "bmp"}})
    mp3 = await finished_render(client, {**edit, "output": {"format": "mp3"}})

    assert decoded(await fetch(client, gif["url"], "image/gif"), "GIF").size == SIZE
    for name in ("poster", "thumbnail"):
        assert decoded(await fetch(client, gif[name], "image/jpeg"), "JPEG").size == SIZE
    shown = await fetch(client, png["url"], "image/png")
    assert shown == files.image("Why cats sit in boxes", "sandbox · Shotstack render", "PNG")
    assert decoded(await fetch(client, bmp["url"], "image/bmp"), "BMP").size == SIZE
    sound = await fetch(client, mp3["url"], "audio/mpeg")
    assert sound.startswith(b"ID3") and len(sound) > 1_000


async def test_a_file_no_job_named_is_not_found(client: httpx.AsyncClient) -> None:
    [url] = await gpt4o_image(client, "a cat")
    task_file = url.rpartition("/")[2]

    for name in ("0123abcd.png", task_file.replace(".png", ".mp4"), "x.exe", "..%2Fstate.py"):
        assert (await client.get(f"/_sandbox/files/{name}")).status_code == 404, name
