"""Directory and glob inputs: each matching file is an item ``{"path", "name", "size"}``.

Local directories are walked lazily, one directory at a time, in sorted order; remote ones (``gs://``,
``s3://``, ``memory://``) are listed through fsspec. Hidden files and directories (names starting with
``.``) are skipped. ``path`` is what a processor opens: an absolute local path, or the full URI of a remote
file; ``name`` is the path relative to the directory (or to the glob's fixed prefix).
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterator
from typing import Any

_MAGIC = set("*?[")


def _is_local(fs: Any) -> bool:
    protocols = fs.protocol if isinstance(fs.protocol, tuple | list) else (fs.protocol,)
    return "file" in protocols or "local" in protocols


def _hidden(rel: str) -> bool:
    return any(part.startswith(".") for part in rel.split("/"))


def glob_root(pattern: str) -> str:
    """The fixed directory prefix of a glob: ``data/2024/*.csv`` -> ``data/2024``."""
    parts = pattern.split("/")
    fixed = []
    for part in parts[:-1]:
        if any(c in _MAGIC for c in part):
            break
        fixed.append(part)
    return "/".join(fixed)


def _walk_local(root: str, recursive: bool, rel_dir: str = "") -> Iterator[tuple[str, str, int]]:
    """(absolute path, relative name, size) in path order, lazily: one directory's listing at a time."""
    try:
        with os.scandir(os.path.abspath(root)) as it:
            entries = []
            for entry in it:
                if entry.name.startswith("."):
                    continue
                try:
                    is_dir = entry.is_dir()
                except OSError:
                    continue
                if is_dir and not recursive:
                    continue
                entries.append((entry.name + "/" if is_dir else entry.name, entry))
    except OSError:
        return
    entries.sort(key=lambda e: e[0])
    for _, entry in entries:
        rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
        try:
            if entry.is_dir():
                yield from _walk_local(entry.path, recursive, rel)
            elif entry.is_file():
                yield entry.path, rel, entry.stat().st_size
        except OSError:
            continue


def list_files(fs: Any, path: str, recursive: bool = False) -> Iterator[dict[str, Any]]:
    """Payloads for every file in a directory or matching a glob, in sorted order."""
    magic = any(c in _MAGIC for c in path)
    local = _is_local(fs)
    if not magic and local:
        for abs_path, rel, size in _walk_local(path, recursive):
            yield {"path": abs_path, "name": rel, "size": size}
        return
    if magic:
        pattern = path
        head, tail = posixpath.split(pattern)
        if recursive and "**" not in pattern and not any(c in _MAGIC for c in head):
            pattern = posixpath.join(head, "**", tail)
        root = glob_root(path).rstrip("/")
        found = fs.glob(pattern, detail=True)
    else:
        root = path.rstrip("/")
        found = fs.find(path, maxdepth=None if recursive else 1, detail=True)
    for p in sorted(found):
        info = found[p]
        if info.get("type", "file") != "file":
            continue
        p_norm = p.rstrip("/")
        rel = p_norm[len(root) + 1:] if root and p_norm.startswith(root + "/") else posixpath.basename(p_norm)
        if _hidden(rel):
            continue
        full = os.path.abspath(p_norm) if local else fs.unstrip_protocol(p_norm)
        yield {"path": full, "name": rel, "size": int(info.get("size") or 0)}
