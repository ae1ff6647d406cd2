"""robots.txt for web crawls (RFC 9309).

Only the pages a crawl discovers are checked: the start page is the one the user asked for, as
with a single URL. The file is read once per crawl, through the same guarded fetcher as the
pages. Following the RFC: a robots.txt that is missing or answers 4xx allows everything; one that
answers 5xx or cannot be reached allows nothing. Crawl-delay is not applied (a crawl fetches its
pages one after the other, at most a few dozen). The stdlib parser applies the first rule that
matches a path, where the RFC asks for the longest; files that put an Allow before the Disallow it
carves out from read the same either way.
"""

from __future__ import annotations

from urllib.parse import urljoin
from urllib.robotparser import RobotFileParser

from finetune_service.retrieval.fetch import USER_AGENT, Fetcher, FetchFailed, FetchRefused

_NOTHING = ["User-agent: *", "Disallow: /"]


class Robots:
    def __init__(self, parser: RobotFileParser, unreadable: str | None = None) -> None:
        self._parser = parser
        self._unreadable = unreadable

    def refusal(self, url: str) -> str | None:
        """Why the crawl may not fetch ``url``, or None when it may."""
        if self._parser.can_fetch(USER_AGENT, url):
            return None
        return self._unreadable or "disallowed by the site's robots.txt"


async def load_robots(fetcher: Fetcher, origin: str) -> Robots:
    url = urljoin(origin, "/robots.txt")
    parser = RobotFileParser(url)
    unreadable: str | None = None
    try:
        result = await fetcher.fetch(url, accept="text/plain")
        lines = result.body.decode("utf-8", "replace").splitlines()  # RFC 9309: robots.txt is UTF-8
    except FetchFailed as error:
        missing = error.status is not None and 400 <= error.status < 500
        lines = [] if missing else _NOTHING
        if not missing:
            unreadable = f"the site's robots.txt could not be read ({error}), so no link is followed"
    except FetchRefused as error:
        lines = _NOTHING
        unreadable = f"the site's robots.txt may not be fetched ({error}), so no link is followed"
    parser.parse(lines)
    return Robots(parser, unreadable)
