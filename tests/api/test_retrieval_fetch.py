"""Retrieval from URLs and web crawls against a loopback site, and SSRF refusals.

No request in this file leaves the machine: refused URLs are checked before any connection,
which every refusal test asserts by recording what the fetcher sends and what the loopback
site receives.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from finetune_service.app import create_app
from finetune_service.retrieval.fetch import Fetcher, FetchPolicy
from finetune_service.settings import Settings
from tests.api.test_retrieval_helpers import LoopbackSite, html, search, wait_ready
from tests.conftest import AUTH_A
from tests.emulators.server import serve_in_thread

PAGES = {
    "/": html('<p>Welcome to the lighthouse museum.</p><a href="/a">A</a> <a href="/b#top">B</a> '
              '<a href="http://example.com/elsewhere">external</a> <a href="mailto:x@y.z">mail</a>'),
    "/a": html('<p>The Fresnel lens was invented by Augustin Fresnel in 1822.</p><a href="/c">C</a>'),
    "/b": html("<p>Lighthouse keepers trimmed the wicks every four hours.</p>"),
    "/c": html("<p>The tallest lighthouse is the Jeddah Light at 133 metres.</p>"),
    "/notes.txt": (200, {"content-type": "text/plain"}, b"Kelp forests grow up to half a metre per day."),
    "/api/data": (200, {"content-type": "application/json"}, b'{"planet": "Neptune", "moons": 16}'),
    "/bad.json": (200, {"content-type": "application/json"}, b'{"broken": '),
    "/redirect-private": (302, {"location": "http://10.0.0.1/secret"}, b""),
    "/redirect-metadata": (302, {"location": "http://169.254.169.254/latest/meta-data/"}, b""),
    "/redirect-ok": (301, {"location": "/notes.txt"}, b""),
    "/loop": (302, {"location": "/loop"}, b""),
    "/big": (200, {"content-type": "text/plain"}, b"word " * 5000),
    "/binary": (200, {"content-type": "application/octet-stream"}, b"\x00\x01\x02"),
}


@pytest.fixture(scope="module")
def site() -> Iterator[tuple[str, LoopbackSite]]:
    app = LoopbackSite(PAGES)
    with serve_in_thread(app) as base:
        yield base, app


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """URLs the retrieval fetcher actually sends requests to."""
    calls: list[str] = []
    original = Fetcher._http

    def recording(self: Fetcher) -> httpx.AsyncClient:
        client = original(self)
        if not getattr(client, "_recording", False):
            real_send = client.send

            async def send(request: httpx.Request, **kwargs: Any) -> httpx.Response:
                calls.append(f"{request.url} (Host: {request.headers.get('host')})")
                return await real_send(request, **kwargs)

            client.send = send  # type: ignore[method-assign]
            client._recording = True  # type: ignore[attr-defined]
        return client

    monkeypatch.setattr(Fetcher, "_http", recording)
    return calls


@pytest.fixture
async def allowed(settings: Settings) -> AsyncIterator[AsyncTestClient[Litestar]]:
    app = create_app(dataclasses.replace(settings, fetch_allowlist=("127.0.0.1",)))
    async with AsyncTestClient(app) as client:
        yield client


async def _add_url(client: AsyncTestClient[Litestar], url: str, **extra: Any) -> Any:
    return await client.post("/api/retrieval/files", json={"url": url, **extra}, headers=AUTH_A)


async def test_url_upload_is_fetched_and_indexed(allowed: AsyncTestClient[Litestar],
                                                 site: tuple[str, LoopbackSite], sent: list[str]) -> None:
    base, _ = site
    response = await _add_url(allowed, f"{base}/notes.txt")
    assert response.status_code == 200, response.text
    body = response.json()
    folder = body["folder"]["apiFolderId"]
    assert body["file"]["url"] == f"{base}/notes.txt"
    status = await wait_ready(allowed, folder, body["document"]["id"])
    assert status["status"] == "ready" and status["contentType"] == "text"
    best = (await search(allowed, folder, "kelp forests grow")).json()["sentences"][0]
    assert "Kelp" in best["sentence"] and best["metadata"]["source_url"] == f"{base}/notes.txt"
    assert best["metadata"]["file_name"] == "notes.txt"

    # The server's content type decides the format; a redirect on the same allowed host is followed.
    data = await _add_url(allowed, f"{base}/api/data", folder_id=folder, collection_name="json")
    assert data.status_code == 200, data.text
    assert (await wait_ready(allowed, folder, data.json()["document"]["id"]))["contentType"] == "json"
    moved = await _add_url(allowed, f"{base}/redirect-ok", folder_id=folder)
    assert moved.status_code == 200 and moved.json()["file"]["url"] == f"{base}/notes.txt"
    neptune = (await search(allowed, folder, "Neptune moons")).json()["sentences"][0]
    assert "Neptune" in neptune["sentence"] and neptune["metadata"]["collection_name"] == "json"
    # Requests went to the vetted address with the original Host header.
    assert all(call.startswith("http://127.0.0.1:") for call in sent)


async def test_url_errors_are_clear(allowed: AsyncTestClient[Litestar], site: tuple[str, LoopbackSite]) -> None:
    base, _ = site
    missing = await _add_url(allowed, f"{base}/missing")
    assert missing.status_code == 400 and "HTTP 404" in missing.json()["detail"]
    bad = await _add_url(allowed, f"{base}/bad.json")
    assert bad.status_code == 422 and "Invalid JSON" in bad.json()["detail"]
    binary = await _add_url(allowed, f"{base}/binary")
    assert binary.status_code == 415
    loop = await _add_url(allowed, f"{base}/loop")
    assert loop.status_code == 400 and "redirected more than 5 times" in loop.json()["detail"]
    services = allowed.app.state.services
    services.retrieval._fetcher = Fetcher(FetchPolicy(allowlist=("127.0.0.1",), max_bytes=1000))
    big = await _add_url(allowed, f"{base}/big")
    assert big.status_code == 413 and "1000-byte limit" in big.json()["detail"]


async def test_crawl_follows_same_host_links_by_level(allowed: AsyncTestClient[Litestar],
                                                      site: tuple[str, LoopbackSite], sent: list[str]) -> None:
    base, _ = site
    response = await allowed.post("/api/retrieval/web-pages", headers=AUTH_A,
                                  json={"url": f"{base}/", "deep_level": 2, "max_links": 10})
    assert response.status_code == 200, response.text
    folder, document = response.json()["folder"]["apiFolderId"], response.json()["document"]["id"]
    status = await wait_ready(allowed, folder, document)
    assert status["status"] == "ready", status
    fetched = {p["url"] for p in status["pages"] if p["status"] == "fetched"}
    assert fetched == {f"{base}/", f"{base}/a", f"{base}/b"}  # level 2: no /c, no other host
    assert not any("example.com" in call for call in sent)
    fresnel = (await search(allowed, folder, "Fresnel lens invented")).json()["sentences"][0]
    assert "1822" in fresnel["sentence"] and fresnel["metadata"]["source_url"] == f"{base}/a"
    listing = (await allowed.get(f"/api/retrieval/folders/{folder}/files", headers=AUTH_A)).json()
    assert listing["count"] >= 3 and all("Jeddah" not in d["sentence"] for d in listing["docs"])
    assert all("do not index" not in d["sentence"] for d in listing["docs"])  # scripts are skipped

    deep = await allowed.post("/api/retrieval/web-pages", headers=AUTH_A,
                              json={"url": f"{base}/", "deep_level": 3, "max_links": 10, "folder_id": folder,
                                    "collection_name": "deep"})
    deep_status = await wait_ready(allowed, folder, deep.json()["document"]["id"])
    assert f"{base}/c" in {p["url"] for p in deep_status["pages"]}
    jeddah = (await search(allowed, folder, "Jeddah tallest lighthouse", collection_name="deep")).json()
    assert "133 metres" in jeddah["sentences"][0]["sentence"]

    capped = await allowed.post("/api/retrieval/web-pages", headers=AUTH_A,
                                json={"url": f"{base}/", "deep_level": 3, "max_links": 1})
    capped_status = await wait_ready(allowed, capped.json()["folder"]["apiFolderId"], capped.json()["document"]["id"])
    assert len(capped_status["pages"]) == 2  # the start page and one link

    bad_level = await allowed.post("/api/retrieval/web-pages", headers=AUTH_A, json={"url": base, "deep_level": 4})
    assert bad_level.status_code == 422 and "deep_level" in bad_level.json()["detail"]


@pytest.mark.parametrize("target", [
    "http://127.0.0.1:{port}/notes.txt",
    "http://10.0.0.1/",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::1]:{port}/notes.txt",
    "http://localhost:{port}/notes.txt",
    "http://[::ffff:127.0.0.1]:{port}/notes.txt",
    "http://0.0.0.0:{port}/",
    "http://224.0.0.1/",
    "http://metadata.google.internal/computeMetadata/v1/",
])
async def test_ssrf_targets_are_refused_before_connecting(client: AsyncTestClient[Litestar],
                                                          site: tuple[str, LoopbackSite], sent: list[str],
                                                          target: str) -> None:
    base, app = site
    hits_before = len(app.hits)
    url = target.format(port=base.rsplit(":", 1)[1])
    for path, body in (("/api/retrieval/files", {"url": url}), ("/api/retrieval/web-pages", {"url": url})):
        response = await client.post(path, json=body, headers=AUTH_A)
        assert response.status_code == 422, response.text
        detail = response.json()["detail"]
        assert detail.startswith(f"Refused to fetch {url}") and "FINETUNE_FETCH_ALLOWLIST" in detail
    assert sent == []
    assert len(app.hits) == hits_before


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/file.txt", "file:///etc/passwd", "gopher://127.0.0.1:70/",
                                 "http://user:pw@example.com/", "not a url"])
async def test_non_http_urls_are_refused(client: AsyncTestClient[Litestar], sent: list[str], url: str) -> None:
    response = await client.post("/api/retrieval/files", json={"url": url}, headers=AUTH_A)
    assert response.status_code == 422, response.text
    assert sent == []


@pytest.mark.parametrize("path", ["/redirect-private", "/redirect-metadata"])
async def test_redirect_to_private_address_is_refused(allowed: AsyncTestClient[Litestar],
                                                      site: tuple[str, LoopbackSite], sent: list[str],
                                                      path: str) -> None:
    base, app = site
    response = await _add_url(allowed, f"{base}{path}")
    assert response.status_code == 422, response.text
    assert "Refused to fetch http://" in response.json()["detail"]
    assert len(sent) == 1 and sent[0].startswith(f"{base}{path}")  # only the allowed first hop was sent
    assert app.hits[-1] == path


ROBOTS = ("User-agent: *\nDisallow: /b\n\n"
          "User-agent: finetune-service-retrieval\nAllow: /a/open\nDisallow: /a\n")


@pytest.mark.parametrize(
    ("robots", "fetched", "skipped"),
    [
        # Our own group applies, not the one for every agent: /b is allowed, /a is not (but /a/open is).
        ((200, {"content-type": "text/plain"}, ROBOTS.encode()), {"/", "/b", "/a/open"}, {"/a": "robots.txt"}),
        # Missing (4xx): everything may be crawled.
        ((404, {"content-type": "text/plain"}, b"no"), {"/", "/a", "/b", "/a/open"}, {}),
        # Unreachable or failing (5xx): nothing but the start page, which the user asked for.
        ((503, {"content-type": "text/plain"}, b"busy"), {"/"},
         {"/a": "could not be read", "/b": "could not be read", "/a/open": "could not be read"}),
    ],
)
async def test_crawl_follows_the_sites_robots_txt(
    allowed: AsyncTestClient[Litestar], robots: tuple[int, dict[str, str], bytes], fetched: set[str],
    skipped: dict[str, str],
) -> None:
    pages = {
        "/": html('<p>Start.</p><a href="/a">A</a> <a href="/b">B</a> <a href="/a/open">open</a>'),
        "/a": html("<p>Private notes.</p>"), "/b": html("<p>Bee keeping.</p>"),
        "/a/open": html("<p>Open part.</p>"), "/robots.txt": robots,
    }
    site = LoopbackSite(pages)
    with serve_in_thread(site) as base:
        response = await allowed.post("/api/retrieval/web-pages", headers=AUTH_A,
                                      json={"url": f"{base}/", "deep_level": 2, "max_links": 10})
        assert response.status_code == 200, response.text
        status = await wait_ready(allowed, response.json()["folder"]["apiFolderId"], response.json()["document"]["id"])
    assert status["status"] == "ready", status
    by_path = {page["url"].removeprefix(base): page for page in status["pages"]}
    assert {path for path, page in by_path.items() if page["status"] == "fetched"} == fetched
    refused = {path: page["error"] for path, page in by_path.items() if page["status"] == "skipped"}
    assert refused.keys() == skipped.keys()
    assert all(skipped[path] in error for path, error in refused.items())
    assert site.hits.count("/robots.txt") == 1
    assert not set(skipped) & set(site.hits)  # a refused page is never asked for
