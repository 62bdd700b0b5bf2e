"""Property-based tests: CSV quoting and line numbers, flattening, the formula-injection guard."""

from __future__ import annotations

import csv
import io
import json
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchyard.core.errors import InputError
from batchyard.io.csv_input import parse_csv
from batchyard.io.csv_output import write_csv
from batchyard.io.flatten import FORMULA_PREFIXES, cell, flatten, neutralise, unflatten
from batchyard.io.problems import Problems
from batchyard.io.readers import decoded_lines
from batchyard.io.validation import RowValidator

pytestmark = pytest.mark.timeout(120)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

cell_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30)
names = st.text(string.ascii_letters + string.digits + "_ -.", min_size=1, max_size=12).map(str.strip).filter(bool)


def parse(data: bytes) -> list[dict]:
    problems = Problems("mem.csv")
    return [p for _, p in parse_csv(decoded_lines(io.BytesIO(data), problems), RowValidator(None), problems)]


@st.composite
def tables(draw):
    header = draw(st.lists(names, min_size=2, max_size=5, unique=True))
    rows = draw(st.lists(st.lists(cell_text, min_size=len(header), max_size=len(header)), max_size=8))
    # A row whose cells are all blank reads as a blank line; real rows have something in them.
    rows = [r for r in rows if any(c.strip() for c in r)]
    return header, rows


# Python's writer leaves a lone CR unquoted unless CR is part of the line terminator: such a file is not
# valid CSV (RFC 4180 quotes CR and LF), so minimal quoting is only drawn with CRLF.
DIALECTS = st.sampled_from([("\r\n", csv.QUOTE_MINIMAL), ("\n", csv.QUOTE_ALL), ("\r\n", csv.QUOTE_ALL)])


@SETTINGS
@given(tables(), DIALECTS, st.booleans())
def test_csv_quoting_round_trips(table, dialect, bom) -> None:
    header, rows = table
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator=dialect[0], quoting=dialect[1])
    writer.writerow(header)
    writer.writerows(rows)
    data = (b"\xef\xbb\xbf" if bom else b"") + buf.getvalue().encode()
    assert parse(data) == [dict(zip(header, r, strict=True)) for r in rows]


@SETTINGS
@given(tables(), st.data())
def test_bad_row_is_reported_on_the_line_it_starts(table, data) -> None:
    header, rows = table
    at = data.draw(st.integers(0, len(rows)))
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_ALL)
    writer.writerow(header)
    writer.writerows(rows[:at])
    expected_line = buf.getvalue().count("\n") + 1
    writer.writerow([*(["x"] * len(header)), "one too many"])
    writer.writerows(rows[at:])
    problems = Problems("mem.csv")
    with pytest.raises(InputError) as exc:
        list(parse_csv(decoded_lines(io.BytesIO(buf.getvalue().encode()), problems), RowValidator(None), problems))
    assert [p.line for p in exc.value.problems] == [expected_line]


json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | cell_text
keys = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="."), min_size=1, max_size=8)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(keys, inner, max_size=3), max_leaves=12)


@SETTINGS
@given(st.dictionaries(keys, json_values, max_size=5))
def test_flatten_round_trips(value) -> None:
    flat = flatten(value)
    assert all(not isinstance(v, dict) or v == {} for v in flat.values())
    assert unflatten(flat) == value


@SETTINGS
@given(cell_text)
def test_no_cell_can_start_a_formula(text) -> None:
    out = cell(text)
    if out.startswith(FORMULA_PREFIXES):
        float(out)  # only plain numbers such as -1.5 keep a leading sign
    assert out == text or out == "'" + text
    assert neutralise(out) == out or out.startswith(("-", "+"))


@SETTINGS
@given(st.lists(st.dictionaries(keys, json_values, max_size=4), min_size=1, max_size=5),
       st.lists(st.dictionaries(keys, json_scalars, max_size=3), min_size=1, max_size=5))
def test_csv_export_columns_hold_every_field(results, payloads) -> None:
    from batchyard.core.models import ItemInfo

    items = [ItemInfo(batch_id="b", item_id=str(i), seq=i, status="succeeded", attempts=1,
                      payload=payloads[i % len(payloads)], result=r) for i, r in enumerate(results, 1)]
    buf = io.StringIO(newline="")
    assert write_csv(lambda: iter(items), buf) == len(items)
    rows = list(csv.DictReader(io.StringIO(buf.getvalue(), newline="")))
    assert len(rows) == len(items)
    for it, row in zip(items, rows, strict=True):
        for key, value in flatten(it.result).items():
            shown = row[f"result.{key}"]
            if isinstance(value, str):
                assert shown in (value, "'" + value)
            elif isinstance(value, bool | type(None)):
                assert shown == {True: "true", False: "false", None: ""}[value]
            elif isinstance(value, int):
                assert int(shown) == value  # exactly, beyond 2**53 too
            elif isinstance(value, float):
                assert float(shown) == value
            else:
                assert json.loads(shown.removeprefix("'")) == value
