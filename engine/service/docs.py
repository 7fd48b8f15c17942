"""`/docs`: FastAPI's Swagger UI page with its script, style and icon served by the API
itself, from the copy of swagger-ui-dist that fastapi-offline ships, so the page works
with no network beyond the API and its policy allows this origin only."""

import base64
import hashlib
import re

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

ASSETS = "/docs/assets"


def serve_docs(app: FastAPI) -> None:
    """Add `/docs` and its assets under `ASSETS` to `app` (neither in its OpenAPI)."""
    page, policy = swagger_page(app.title, app.openapi_url or "/openapi.json")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> Response:
        return HTMLResponse(page, headers={"Content-Security-Policy": policy})

    # swagger-ui-bundle.js, swagger-ui.css, favicon.png: with ETags, and 304 when unchanged.
    app.mount(ASSETS, StaticFiles(packages=[("fastapi_offline", "static")]), name="docs-assets")


def swagger_page(title: str, openapi_url: str) -> tuple[bytes, str]:
    """The page and a policy of its own: everything from this origin, its one inline
    script by hash, never `'unsafe-inline'`. Made once, at start-up."""
    page = bytes(
        get_swagger_ui_html(
            openapi_url=openapi_url,
            title=title,
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon.png",
        ).body
    )
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() + "'"
        for script in re.findall(r"<script>(.*?)</script>", page.decode(), re.S)
    )
    policy = (
        f"default-src 'none'; script-src 'self' {hashes}; style-src 'self'; "
        "img-src 'self' data:; connect-src 'self'; base-uri 'none'; frame-ancestors 'none'"
    )
    return page, policy
