"""What the server may reach on a client's say-so: URLs (the SSRF guard) and local paths (data roots).

A client of ``batchyard serve`` names things the *server* then reads: an ``input_uri``, a path column
such as seed 004's ``master_file``, a webhook URL. Without a guard, that lets anyone who can reach the API
read the server's files, or make it fetch from its own network (loopback services, the cloud metadata
endpoint with the machine's credentials). So:

- ``check_url`` refuses URLs whose host resolves to a loopback, private, link-local, shared (CGNAT),
  multicast, reserved, unspecified or metadata address, unless the server runs with
  ``--allow-private-network``. Every address the name resolves to is checked, since the fetch may use any.
- ``http_storage_options`` makes fsspec's HTTP reads apply the same rule to the addresses it actually
  connects to, on every hop: redirects, and DNS answers that change between the check and the fetch.
- ``confine_path`` requires a path to be inside one of the ``--data-root`` directories once ``..`` and
  symlinks are resolved; a server without data roots reads no local files.
- ``path_fields`` / ``confining_model`` find the fields of a processor's params model that hold paths and
  build a subclass that confines them, so that each row is checked where it is validated (and a refusal
  carries the row's line number).
"""

from __future__ import annotations

import asyncio
import collections.abc as cabc
import functools
import ipaddress
import os
import re
import socket
import types
import typing
from pathlib import Path, PurePath
from typing import Annotated, Any, Union, get_args, get_origin
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, create_model, field_validator
from pydantic_core import PydanticCustomError

from batchyard.server.errors import InvalidPath, InvalidUrl, PathNotAllowed, UrlNotAllowed

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

ALLOW_PRIVATE_HINT = "start the server with --allow-private-network to allow it"
DATA_ROOT_HINT = "start it with --data-root DIR to let clients name files under DIR"
# The prefix of every path refusal inside a row's validation problems: submit.py tells them apart by it.
PATH_REFUSED = "path not allowed: "

# A host of numeric labels only (decimal, octal or hex: "2130706433", "0177.0.0.1", "0x7f.1") is an IPv4
# address in one of the forms inet_aton reads, never a name: no top-level domain is numeric (RFC 3696).
_NUMERIC_HOST = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)(?:\.(?:0x[0-9a-f]*|[0-9]+))*\.?", re.IGNORECASE)
_SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT; Python counts it neither private nor global
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # the well-known NAT64 prefix: the last 32 bits are an IPv4 address
# Cloud instance-metadata endpoints (AWS, GCP and Azure share 169.254.169.254; AWS's IPv6 one; Alibaba's).
# They fall in refused ranges anyway; naming them makes the refusal say what was at stake.
METADATA = frozenset(ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200"))


# -- addresses and URLs ------------------------------------------------------------------------------


def refusal(addr: IPAddress) -> str | None:
    """Why the server must not connect to ``addr`` (e.g. ``"loopback"``), or None for a public address."""
    if isinstance(addr, ipaddress.IPv6Address):
        # An IPv4 address inside an IPv6 one (mapped, 6to4, NAT64) reaches the IPv4 host: judge that host.
        embedded = addr.ipv4_mapped or addr.sixtofour
        if embedded is None and addr in _NAT64:
            embedded = ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
        if embedded is not None:
            inner = refusal(embedded)
            return None if inner is None else f"{inner}, IPv4 {embedded} inside IPv6"
        if addr.scope_id:  # fe80::1%eth0: the scope does not change the class; compare without it
            addr = ipaddress.IPv6Address(str(addr).split("%", 1)[0])
    if addr in METADATA:
        return "cloud metadata"
    for why, hit in (("loopback", addr.is_loopback), ("unspecified", addr.is_unspecified),
                     ("link-local", addr.is_link_local), ("multicast", addr.is_multicast),
                     ("shared, carrier-grade NAT", isinstance(addr, ipaddress.IPv4Address) and addr in _SHARED),
                     ("private", addr.is_private), ("reserved", addr.is_reserved)):
        if hit:
            return why
    # Documentation, benchmarking and other special ranges: not reachable on the internet either.
    return None if addr.is_global else "non-public"


def _refused_message(url: str | None, host: str, addr: IPAddress, why: str) -> str:
    try:
        literal = ipaddress.ip_address(host.strip("[]")) == addr
    except ValueError:
        literal = False
    what = f"address {addr} ({why})" if literal else f"host {host} resolves to {addr} ({why})"
    return (f"{url + ': ' if url else ''}{what}: this server does not fetch from loopback, private, link-local "
            f"or cloud-metadata addresses ({ALLOW_PRIVATE_HINT})")


def _resolve(url: str, host: str, port: int) -> list[IPAddress]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:  # socket.gaierror is an OSError; a bad IDNA name a UnicodeError
        reason = getattr(exc, "strerror", None) or str(exc)
        raise UrlNotAllowed(f"{url}: cannot resolve host {host!r} ({reason}); the server fetches only URLs "
                            "whose host name resolves", url=url, host=host) from None
    # sockaddr[0] is the address text (IPv6 ones may carry a %scope, which ipaddress accepts)
    return [ipaddress.ip_address(info[4][0]) for info in infos]


def check_url(url: str, *, allow_private: bool) -> list[IPAddress]:
    """Refuse ``url`` unless it is http(s) and every address its host resolves to may be fetched.

    With ``allow_private`` any resolvable host is accepted. Raises ``UrlNotAllowed`` naming the URL, the
    host and the refused address, and how to allow it (``InvalidUrl`` when the URL is malformed). Returns
    the addresses judged: connect to one of them (see ``PinnedTransport``), never resolve the name again.
    """
    try:
        parts = urlsplit(url)
        port = parts.port  # a bad port (":99999", ":x") raises here
    except ValueError as exc:
        raise InvalidUrl(f"{url!r} is not a valid URL ({exc})", url=url) from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise InvalidUrl(f"{url}: only http and https URLs are fetched, not "
                         f"{scheme + '://' if scheme else 'a URL without a scheme'}", url=url)
    host = parts.hostname
    if not host:
        raise InvalidUrl(f"{url}: the URL has no host", url=url)
    if _NUMERIC_HOST.fullmatch(host):
        try:  # the C resolver's reading of the numeric forms (the one a fetch would use); judged below
            socket.inet_aton(host.rstrip("."))
        except OSError:
            raise InvalidUrl(f"{url}: host {host!r} is written as an IPv4 address but is not one", url=url,
                             host=host) from None
    addresses = _resolve(url, host, port or (443 if scheme == "https" else 80))
    if allow_private:
        return addresses
    for addr in addresses:
        why = refusal(addr)
        if why is not None:
            raise UrlNotAllowed(_refused_message(url, host, addr, why), url=url, host=host, address=str(addr))
    return addresses


class PinnedTransport(httpx.AsyncBaseTransport):
    """An httpx transport that sends each request to an address ``check_url`` just judged, and only there.

    Checking a URL and then letting httpx connect to it resolves the name twice: a DNS answer that
    changes in between (DNS rebinding: public for the check, 127.0.0.1 or 169.254.169.254 for the
    connection) would slip past the guard. Here the name is resolved once, by ``check_url``; the request
    goes to that IP literal, with the ``Host`` header (set by httpx from the original URL) and, for https,
    the TLS server name (``sni_hostname``, which the certificate is also verified against) still the
    name. With ``allow_private`` nothing is refused, so requests pass through unchanged. Redirects are
    the client's to follow or not; each hop comes back through here and is judged afresh.
    """

    def __init__(self, *, allow_private: bool, inner: httpx.AsyncBaseTransport | None = None) -> None:
        self.allow_private = allow_private
        self.inner = inner or httpx.AsyncHTTPTransport(trust_env=False)  # a proxy would be judged, not the target

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.allow_private:
            return await self.inner.handle_async_request(request)
        url = request.url
        addresses = await asyncio.to_thread(check_url, str(url), allow_private=False)
        if url.scheme == "https" and not _is_ip(url.host):
            request.extensions = {**request.extensions, "sni_hostname": url.host}
        for n, addr in enumerate(addresses, 1):  # each judged address in turn, as a connect would
            request.url = url.copy_with(host=str(addr))
            try:
                return await self.inner.handle_async_request(request)
            except httpx.ConnectError:
                if n == len(addresses):
                    raise
        raise AssertionError("check_url returned no address")  # getaddrinfo never answers an empty list

    async def aclose(self) -> None:
        await self.inner.aclose()


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def http_storage_options(allow_private: bool) -> dict[str, Any] | None:
    """fsspec storage options for reading http(s) URLs under the guard (None: fsspec's defaults).

    ``check_url`` runs before the read, but the read resolves the name again and follows redirects: a
    redirect to ``http://169.254.169.254/`` or a DNS answer that changed since the check (DNS rebinding)
    would slip through. The session built here judges the addresses it actually connects to instead, on
    every hop, so redirects are followed under the same rule.
    """
    return None if allow_private else {"get_client": _guarded_client}


async def _guarded_client(**kwargs: Any) -> Any:
    """fsspec's ``get_client``: an aiohttp session that connects only to public addresses.

    Two checks, because aiohttp resolves names but connects to IP literals without resolving: the
    resolver refuses a name if any of its addresses is refused (as ``check_url`` does), and the socket
    factory, which sees every address just before the connection, refuses literals (and anything else).
    """
    import aiohttp

    connector = aiohttp.TCPConnector(resolver=_guarded_resolver_class()(), socket_factory=_guarded_socket)
    # trust_env stays off: through an environment proxy the guard would judge the proxy, not the target.
    return aiohttp.ClientSession(connector=connector, trust_env=False, **kwargs)


def _guarded_socket(addr_info: tuple[Any, ...]) -> socket.socket:
    family, type_, proto, _, sockaddr = addr_info
    addr = ipaddress.ip_address(sockaddr[0])
    why = refusal(addr)
    if why is not None:  # not an OSError: aiohttp would report it as a mere connection failure
        raise UrlNotAllowed(_refused_message(None, str(addr), addr, why), host=str(addr), address=str(addr))
    return socket.socket(family=family, type=type_, proto=proto)


@functools.cache
def _guarded_resolver_class() -> type:
    """Built on first use, so that importing this module does not import aiohttp."""
    from aiohttp.abc import AbstractResolver, ResolveResult
    from aiohttp.resolver import DefaultResolver

    class GuardedResolver(AbstractResolver):
        def __init__(self) -> None:
            self._inner = DefaultResolver()

        async def resolve(self, host: str, port: int = 0,
                          family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
            found = await self._inner.resolve(host, port, family)
            for result in found:
                addr = ipaddress.ip_address(result["host"])
                why = refusal(addr)
                if why is not None:
                    raise UrlNotAllowed(_refused_message(None, host, addr, why), host=host, address=str(addr))
            return found

        async def close(self) -> None:
            await self._inner.close()

    return GuardedResolver


# -- local paths -------------------------------------------------------------------------------------


def _roots_text(roots: cabc.Sequence[Path]) -> str:
    return ", ".join(str(r) for r in roots)


def resolve_roots(roots: cabc.Iterable[Path]) -> tuple[Path, ...]:
    return tuple(Path(r).resolve(strict=False) for r in roots)


def nul_path_reason(path: str) -> str | None:
    """Why ``path`` is malformed (no system has a path with a NUL byte), or None."""
    return f"{path!r} contains a NUL byte: it is not a path" if "\0" in path else None


def _confine(path: str, roots: tuple[Path, ...]) -> Path:
    """``confine_path`` with the roots already resolved (a row check resolves them once, not per row)."""
    malformed = nul_path_reason(path)
    if malformed:  # before anything else: malformed is 422 whatever the roots
        raise InvalidPath(malformed, path=path)
    if not roots:
        raise PathNotAllowed(f"{path!r}: this server reads no local files; {DATA_ROOT_HINT}", path=path)
    try:
        given = Path(path)
        target = (given if given.is_absolute() else roots[0] / given).resolve(strict=False)
    except (OSError, ValueError, RuntimeError) as exc:  # a symlink loop, a name too long
        raise PathNotAllowed(f"{path!r} is not a usable path ({exc})", path=path) from None
    if any(target.is_relative_to(root) for root in roots):
        return target
    # The resolved target is not shown: it would tell clients where symlinks under the roots point.
    raise PathNotAllowed(f"{path!r} is outside this server's data roots ({_roots_text(roots)}) once '..' and "
                         "symlinks are resolved; name a file under a data root, or start the server with "
                         "another --data-root", path=path)


def confine_path(path: str, roots: list[Path]) -> Path:
    """``path`` resolved (symlinks followed), if it is inside one of ``roots``; else ``PathNotAllowed``.

    A relative path is taken relative to the first root. Without roots every path is refused.
    """
    return _confine(path, resolve_roots(roots))


# -- path fields of a params model -------------------------------------------------------------------

_CONTAINERS = (list, tuple, set, frozenset, cabc.Sequence, cabc.MutableSequence, cabc.Set, cabc.MutableSet,
               cabc.Iterable, cabc.Collection)
_MAPPINGS = (dict, cabc.Mapping, cabc.MutableMapping)


def _is_path_type(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, PurePath)


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _holds_path(tp: Any, seen: frozenset[type] = frozenset()) -> bool:
    """Whether values of type ``tp`` may contain a path: ``Path``, ``FilePath``, ``Path | None``,
    ``list[Path]``, ``dict[str, Path]``, or a nested model with such a field."""
    if _is_path_type(tp):
        return True
    if _is_model(tp):
        if tp in seen:  # a self-referencing model
            return False
        return any(_holds_path(f.annotation, seen | {tp}) for f in tp.model_fields.values())
    return any(_holds_path(arg, seen) for arg in get_args(tp) if arg is not Ellipsis)


def path_fields(model: type[BaseModel] | None) -> list[str]:
    """The names of the fields of ``model`` whose values hold local paths (see ``_holds_path``)."""
    if model is None:
        return []
    return [name for name, info in model.model_fields.items() if _holds_path(info.annotation)]


def _paths_in(tp: Any, value: Any) -> cabc.Iterator[str]:
    """The raw path strings inside ``value`` (as given, before validation) where ``tp`` expects a path.

    Values that do not fit the type are skipped: the model's own validation reports them.
    """
    if value is None:
        return
    origin = get_origin(tp)
    if _is_path_type(tp):
        if isinstance(value, str | PurePath):  # what JSON and CSV give, and Path objects from Python callers
            yield str(value)
    elif origin is Annotated:
        yield from _paths_in(get_args(tp)[0], value)
    elif origin in (Union, types.UnionType):
        # Any arm that takes a path makes a string a path (``int | Path`` with "3" is checked too: safe side)
        for arm in get_args(tp):
            if _holds_path(arm):
                yield from _paths_in(arm, value)
    elif origin in _MAPPINGS:
        args = get_args(tp)
        if isinstance(value, dict) and len(args) == 2:
            for v in value.values():
                yield from _paths_in(args[1], v)
    elif origin in _CONTAINERS:
        args = get_args(tp)
        if isinstance(value, list | tuple | set | frozenset):
            if origin is tuple and Ellipsis not in args:  # tuple[str, Path]: each position has its own type
                for arg, v in zip(args, value, strict=False):
                    yield from _paths_in(arg, v)
            else:  # list[Path], tuple[Path, ...]
                for v in value:
                    for arg in args:
                        if arg is not Ellipsis:
                            yield from _paths_in(arg, v)
    elif _is_model(tp) and isinstance(value, dict):
        for name, info in tp.model_fields.items():
            key = info.alias if isinstance(info.alias, str) and info.alias in value else name
            if key in value:
                yield from _paths_in(info.annotation, value[key])


def malformed_paths(model: type[BaseModel], name: str, value: Any) -> list[str]:
    """Why each path in field ``name``'s raw ``value`` is malformed (422), as ``refused_paths`` says why
    each is refused (403); a malformed path is never also refused."""
    found = (nul_path_reason(p) for p in dict.fromkeys(_paths_in(model.model_fields[name].annotation, value)))
    return [r for r in found if r]


def refused_paths(model: type[BaseModel], name: str, value: Any, roots: tuple[Path, ...]) -> list[str]:
    """Why each path in field ``name``'s raw ``value`` is refused (empty: all are allowed).

    On the server the processor later opens the path itself, relative to its own working directory,
    so only absolute paths inside the roots are accepted.
    """
    out: list[str] = []
    for path in dict.fromkeys(_paths_in(model.model_fields[name].annotation, value)):  # once each, in order
        if nul_path_reason(path):  # malformed, not refused: callers report it as an invalid value
            continue
        if roots and not os.path.isabs(path):
            out.append(f"{path!r} is a relative path; give an absolute path under a data root "
                       f"({_roots_text(roots)})")
            continue
        try:
            _confine(path, roots)
        except PathNotAllowed as exc:
            out.append(str(exc))
    return out


@functools.lru_cache(maxsize=128)
def confining_model(model: type[BaseModel], roots: tuple[Path, ...]) -> type[BaseModel]:
    """A subclass of ``model`` whose path fields refuse paths outside ``roots`` (resolved).

    Used only to validate rows on submission; the processor still receives its own model. A refusal is a
    validation problem whose reason starts with ``PATH_REFUSED``, so that the readers report it with the
    row's line number and column like any other problem. The check runs before the field's own
    validation, so that ``FilePath``'s "does not exist" never tells a client about files outside the roots.
    """
    names = path_fields(model)

    def confine(cls: type[BaseModel], value: Any, info: Any) -> Any:
        malformed = malformed_paths(model, info.field_name, value)
        if malformed:  # an ordinary invalid value (422 with line and column), not a refusal
            raise PydanticCustomError("invalid_path", "; ".join(malformed))
        reasons = refused_paths(model, info.field_name, value, roots)
        if reasons:
            raise PydanticCustomError("path_not_allowed", PATH_REFUSED + "; ".join(reasons))
        return value

    validators: dict[str, Any] = {"batchyard_confine_paths": field_validator(*names, mode="before")(confine)}
    return typing.cast(type[BaseModel], create_model(model.__name__, __base__=model, __module__=model.__module__,
                                                      __validators__=validators))
