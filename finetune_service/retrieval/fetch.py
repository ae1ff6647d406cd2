"""Server-side fetching of user-supplied URLs without becoming an SSRF proxy.

Rules, checked before any connection is made and again for every redirect hop:

* only `http` and `https`, no user:password in the URL;
* the host is resolved and **every** address must be public: loopback, private (RFC 1918,
  unique-local), link-local, shared (100.64/10), multicast, reserved, unspecified, IPv4-mapped
  forms of those and the cloud metadata addresses are refused;
* the connection goes to the address that was checked (the URL is pinned to the IP, the Host
  header and TLS SNI keep the name), so a DNS answer that changes between check and connect
  (rebinding) cannot redirect the request;
* at most `max_redirects` redirects, `max_bytes` of body, `timeout` seconds in total.

`allowlist` entries (settings.fetch_allowlist) are host names or IP networks/addresses
("127.0.0.1", "10.0.0.0/8", "docs.internal"): a URL whose host name is listed, or whose every
address falls in a listed network, skips the address rules (scheme, size and time still apply).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200", "192.0.0.192",
))
METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata", "instance-data", "metadata.azure.internal"})
USER_AGENT = "finetune-service-retrieval/1.0 (+https://finetune-service.dev)"


class FetchRefused(ValueError):
    """The URL is not allowed (scheme, address); nothing was sent."""


class FetchFailed(ValueError):
    """The remote answered with an error, too much data, too slowly, or not at all."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status  # the HTTP status of an error answer; None when there was none


class FetchTooLarge(FetchFailed):
    pass


@dataclass(frozen=True)
class FetchPolicy:
    allowlist: tuple[str, ...] = ()
    max_bytes: int = 10 * 1024 * 1024
    timeout: float = 15.0
    max_redirects: int = 5

    def _networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        networks = []
        for entry in self.allowlist:
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                continue
        return networks

    def host_listed(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        return any(entry.lower().rstrip(".") == host for entry in self.allowlist)

    def address_listed(self, address: IPAddress) -> bool:
        return any(address in network for network in self._networks())


@dataclass(frozen=True)
class FetchResult:
    url: str  # the final URL after redirects
    status: int
    content_type: str | None
    charset: str | None
    body: bytes


def refusal_reason(address: IPAddress) -> str | None:
    """Why connecting to `address` is refused, or None when it is a public address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return refusal_reason(address.ipv4_mapped)
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_private:
        return "a private address"
    if address.is_reserved:
        return "a reserved address"
    if not address.is_global:
        return "a non-public address"
    return None


async def resolve(host: str, port: int) -> list[IPAddress]:
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise FetchFailed(f"Cannot resolve host {host!r}: {error.strerror or error}.") from None
    addresses: list[IPAddress] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise FetchFailed(f"Host {host!r} has no address.")
    return addresses


@dataclass(frozen=True)
class CheckedUrl:
    url: str
    scheme: str
    host: str
    port: int
    address: IPAddress  # the vetted address the connection goes to


async def check_url(url: str, policy: FetchPolicy) -> CheckedUrl:
    """Vet `url` for a server-side request (see the module docstring); FetchRefused if not allowed."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as error:
        raise FetchRefused(f"Invalid URL {url!r}: {error}.") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise FetchRefused(f"Only http and https URLs can be fetched, not {scheme or 'a URL without scheme'!r}.")
    host = (parts.hostname or "").lower()
    if not host:
        raise FetchRefused(f"The URL {url!r} has no host.")
    if parts.username is not None or parts.password is not None:
        raise FetchRefused("URLs with a user name or password are not fetched.")
    port = port or (443 if scheme == "https" else 80)
    if host.rstrip(".") in METADATA_HOSTS and not policy.host_listed(host):
        raise FetchRefused(f"Refused to fetch {url}: {host} is a cloud metadata host. An operator can allow a "
                           "host with FINETUNE_FETCH_ALLOWLIST.")
    addresses = await resolve(host, port)
    if not policy.host_listed(host):
        for address in addresses:
            if policy.address_listed(address):
                continue
            reason = refusal_reason(address)
            if reason is not None:
                shown = host if host.strip("[]") == str(address) else f"{host} ({address})"
                raise FetchRefused(
                    f"Refused to fetch {url}: {shown} is {reason}. Server-side fetches only go to public "
                    "addresses; an operator can allow a host or network with FINETUNE_FETCH_ALLOWLIST."
                )
    return CheckedUrl(urlunsplit((scheme, parts.netloc, parts.path or "/", parts.query, "")), scheme, host, port,
                      addresses[0])


def _pinned(checked: CheckedUrl) -> tuple[str, dict[str, str], dict[str, str]]:
    """The URL rewritten to the vetted address, the Host header, and httpx request extensions."""
    parts = urlsplit(checked.url)
    ip = f"[{checked.address}]" if checked.address.version == 6 else str(checked.address)
    default = 443 if checked.scheme == "https" else 80
    netloc = ip if checked.port == default else f"{ip}:{checked.port}"
    host_header = parts.netloc.rsplit("@", 1)[-1]
    extensions = {"sni_hostname": checked.host} if checked.scheme == "https" else {}
    return urlunsplit((checked.scheme, netloc, parts.path, parts.query, "")), {"Host": host_header}, extensions


def _content_type(value: str | None) -> tuple[str | None, str | None]:
    if not value:
        return None, None
    base, _, params = value.partition(";")
    charset = None
    for param in params.split(";"):
        key, _, val = param.strip().partition("=")
        if key.lower() == "charset" and val:
            charset = val.strip("\"' ")
    return base.strip().lower() or None, charset


class Fetcher:
    """Fetches URLs under a FetchPolicy. `client` is created on first use and closed by `aclose`."""

    def __init__(self, policy: FetchPolicy, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.policy = policy
        self._transport = transport
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                follow_redirects=False, trust_env=False, transport=self._transport,
                timeout=httpx.Timeout(self.policy.timeout), headers={"User-Agent": USER_AGENT},
            )
        return self._client

    async def fetch(self, url: str, *, accept: str = "*/*") -> FetchResult:
        try:
            async with asyncio.timeout(self.policy.timeout):
                return await self._fetch(url, accept)
        except TimeoutError:
            raise FetchFailed(f"Fetching {url} took longer than {self.policy.timeout:g} s.") from None

    async def _fetch(self, url: str, accept: str) -> FetchResult:
        current = url
        for _ in range(self.policy.max_redirects + 1):
            checked = await check_url(current, self.policy)
            target, headers, extensions = _pinned(checked)
            request = self._http().build_request("GET", target, headers={**headers, "Accept": accept},
                                                 extensions=extensions)
            try:
                response = await self._http().send(request, stream=True)
            except httpx.HTTPError as error:
                raise FetchFailed(f"Could not fetch {checked.url}: {type(error).__name__} {error}".strip()) from None
            try:
                if response.status_code in (301, 302, 303, 307, 308):
                    location = response.headers.get("location")
                    if not location:
                        raise FetchFailed(f"{checked.url} redirected without a Location header.")
                    current = urljoin(checked.url, location)
                    continue
                if response.status_code >= 400:
                    raise FetchFailed(f"{checked.url} answered HTTP {response.status_code}.", response.status_code)
                declared = response.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > self.policy.max_bytes:
                    raise FetchTooLarge(f"{checked.url} is {int(declared)} bytes; the limit is "
                                        f"{self.policy.max_bytes} bytes.")
                body = bytearray()
                # Decoded bytes are counted, so a compressed body cannot expand past the cap either.
                async for piece in response.aiter_bytes():
                    body.extend(piece)
                    if len(body) > self.policy.max_bytes:
                        raise FetchTooLarge(f"{checked.url} is larger than the {self.policy.max_bytes}-byte limit.")
                content_type, charset = _content_type(response.headers.get("content-type"))
                return FetchResult(checked.url, response.status_code, content_type, charset, bytes(body))
            except httpx.HTTPError as error:
                raise FetchFailed(f"Could not fetch {checked.url}: {type(error).__name__} {error}".strip()) from None
            finally:
                await response.aclose()
        raise FetchFailed(f"{url} redirected more than {self.policy.max_redirects} times.")

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def same_host(url: str, origin: str) -> bool:
    a, b = urlsplit(url), urlsplit(origin)
    return a.scheme in ("http", "https") and (a.hostname or "").lower() == (b.hostname or "").lower() and (
        a.port or (443 if a.scheme == "https" else 80)) == (b.port or (443 if b.scheme == "https" else 80))


def crawl_candidates(links: Sequence[str], origin: str, seen: set[str]) -> list[str]:
    out = []
    for link in links:
        if same_host(link, origin) and link not in seen:
            out.append(link)
    return out
