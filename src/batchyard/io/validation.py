"""Checking items against a processor's parameter model, and turning CSV cells into typed values.

A processor declares a pydantic model for its per-item parameters. An item's parameters are the batch's
shared parameters (``--param``) overlaid with the item's own fields, so a field is required of a row only
when the shared parameters do not supply it.
"""

from __future__ import annotations

import collections.abc as cabc
import json
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from batchyard.io.nesting import json_too_deep, too_deep_message
from batchyard.io.problems import Problems

_LISTS = (list, tuple, set, frozenset, cabc.Sequence, cabc.MutableSequence, cabc.Set, cabc.MutableSet,
          cabc.Iterable, cabc.Collection)
_MAPPINGS = (dict, cabc.Mapping, cabc.MutableMapping)
_SCALARS = (str, int, float, bool, type(None))


def _arms(annotation: Any) -> list[Any]:
    """The non-None alternatives of an annotation, with Annotated[...] unwrapped."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _arms(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        out: list[Any] = []
        for arm in get_args(annotation):
            out.extend(_arms(arm))
        return out
    if annotation is type(None):
        return []
    return [annotation]


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


@dataclass(frozen=True)
class FieldKind:
    name: str
    required: bool
    is_list: bool  # a cell "a,b" becomes ["a", "b"]
    is_json: bool  # a cell holds JSON (an object, or a list of objects)
    textual: bool  # validated values equal the text (str, string Literals, lists of them)


def field_kind(name: str, annotation: Any, required: bool) -> FieldKind:
    arms = _arms(annotation)
    lists = [a for a in arms if get_origin(a) in _LISTS or a in _LISTS]
    is_json = any(get_origin(a) in _MAPPINGS or a in _MAPPINGS or _is_model(a) for a in arms)
    for a in lists:
        if any(_is_model(x) or get_origin(x) in _MAPPINGS for x in get_args(a)):
            is_json = True
    is_list = bool(arms) and len(lists) == len(arms) and not is_json
    textual = bool(arms) and all(_textual(a) for a in arms)
    return FieldKind(name=name, required=required, is_list=is_list, is_json=is_json, textual=textual)


def _textual(tp: Any) -> bool:
    origin = get_origin(tp)
    if tp is str:
        return True
    if origin is Literal:
        return all(isinstance(x, str) for x in get_args(tp))
    if origin in (Annotated, Union, types.UnionType):
        return all(_textual(a) for a in _arms(tp))
    if origin in (list, cabc.Sequence, cabc.MutableSequence):
        args = get_args(tp)
        return bool(args) and all(_textual(a) for a in args)
    return False


def split_list(cell: str) -> list[str]:
    """``"mfcc, ai"`` -> ``["mfcc", "ai"]``; empty parts are dropped."""
    return [part.strip() for part in cell.split(",") if part.strip()]


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class RowValidator:
    """Validates items (dicts) against a processor's params model, merged over the shared params."""

    def __init__(self, model: type[BaseModel] | None, shared: dict[str, Any] | None = None,
                 processor_name: str | None = None) -> None:
        self.model = model
        self.shared = dict(shared or {})
        self.processor_name = processor_name
        self.columns: dict[str, FieldKind] = {}  # accepted column name -> field
        self._scalar_checked = False
        self._reported_missing: set[str] = set()
        if model is not None:
            hints = typing.get_type_hints(model, include_extras=True)
            for name, info in model.model_fields.items():
                kind = field_kind(name, hints.get(name, info.annotation), info.is_required())
                self.columns[name] = kind
                if isinstance(info.alias, str):
                    self.columns[info.alias] = kind

    @property
    def active(self) -> bool:
        return self.model is not None

    def _given(self, kind: FieldKind, columns: cabc.Collection[str]) -> bool:
        names = [c for c, k in self.columns.items() if k is kind]
        return any(n in columns or n in self.shared for n in names)

    # -- CSV ---------------------------------------------------------------------------------------

    def check_header(self, header: list[str], problems: Problems, line: int) -> None:
        """Report required columns that neither the header nor the shared params supply."""
        if self.model is None:
            return
        seen: set[str] = set()
        for kind in self.columns.values():
            if kind.required and kind.name not in seen and not self._given(kind, header):
                seen.add(kind.name)
                self._reported_missing.update(c for c, k in self.columns.items() if k is kind)
                problems.add(line, f"missing required column {kind.name!r} (the header has: "
                                   f"{', '.join(header) or 'nothing'})", column=kind.name)

    def plan(self, header: list[str]) -> list[FieldKind | None]:
        """The field behind each column (None for columns the model does not know)."""
        return [self.columns.get(col) for col in header]

    def coerce_row(self, plan: list[FieldKind | None], header: list[str],
                   cells: list[str]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        """Cells to values: lists split, JSON parsed, empty optional cells dropped; then validated.

        Returns the payload (extra columns kept as text) and (column, reason) problems.
        """
        payload: dict[str, Any] = {}
        bad: list[tuple[str, str]] = []
        shared = self.shared
        for kind, col, cell in zip(plan, header, cells, strict=True):
            if kind is None:
                payload[col] = cell
                continue
            if kind.is_list or kind.is_json:
                text = cell.strip()
            else:
                text = cell if not cell or not (cell[0].isspace() or cell[-1].isspace()) else cell.strip()
            if not text:
                if kind.required and col not in shared and kind.name not in shared:
                    bad.append((col, "required value is empty"))
                continue
            if kind.is_json or (kind.is_list and text[0] == "["):
                if json_too_deep(text):  # the parser would raise RecursionError
                    bad.append((col, too_deep_message("the cell")))
                    continue
                try:
                    payload[col] = json.loads(text)
                except ValueError as exc:
                    if kind.is_json:
                        bad.append((col, f"expected JSON ({exc}), got {_short(cell)}"))
                        continue
                    payload[col] = split_list(text)
            elif kind.is_list:
                payload[col] = split_list(text)
            else:
                payload[col] = cell
        if self.model is None:
            return payload, bad
        values = self._validate(payload, bad, skip_missing={col for col, _ in bad} if bad else ())
        if values is not None and not bad:
            for kind, col in zip(plan, header, strict=True):
                if kind is None or kind.textual or col not in payload:
                    continue
                v = getattr(values, kind.name)
                if isinstance(v, _SCALARS):
                    payload[col] = v
                elif isinstance(v, list | tuple) and all(isinstance(x, _SCALARS) for x in v):
                    payload[col] = list(v)
        return payload, bad

    # -- objects (JSON, JSONL) ---------------------------------------------------------------------

    def check_object(self, obj: dict[str, Any]) -> list[tuple[str, str]]:
        bad: list[tuple[str, str]] = []
        if self.model is not None:
            self._validate(obj, bad)
        return bad

    def check_scalar(self, problems: Problems, line: int | None) -> None:
        """Items that are not objects carry no fields: the shared params must satisfy the model alone."""
        if self.model is None or self._scalar_checked:
            return
        self._scalar_checked = True
        try:
            self.model.model_validate(self.shared)
        except ValidationError as exc:
            for err in exc.errors():
                col = ".".join(str(p) for p in err["loc"]) or None
                if err["type"] == "missing":
                    reason = (f"processor {self.processor_name!r} needs parameter {col!r}; these items are not "
                              f"objects, so pass it with --param {col}=VALUE")
                else:
                    reason = f"{err['msg']} (got {_short(err.get('input'))})"
                problems.add(line, reason, column=col)

    # -- shared ------------------------------------------------------------------------------------

    def _validate(self, fields: dict[str, Any], bad: list[tuple[str, str]],
                  skip_missing: cabc.Collection[str] = ()) -> BaseModel | None:
        assert self.model is not None
        try:
            return self.model.model_validate({**self.shared, **fields} if self.shared else fields)
        except ValidationError as exc:
            for err in exc.errors():
                loc = err["loc"]
                col = str(loc[0]) if loc else ""
                if err["type"] == "missing" and (col in self._reported_missing or col in skip_missing):
                    continue
                rest = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc[1:])
                if err["type"] == "missing":
                    reason = "required value is missing"
                else:
                    reason = f"{err['msg']} (got {_short(err.get('input'))})"
                if rest:
                    reason = f"at {col}{rest}: {reason}"
                bad.append((col, reason))
            return None
