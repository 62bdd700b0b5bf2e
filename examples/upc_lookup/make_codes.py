"""Make a UPC file for the upc_lookup example, one code per line as seed 001's: codes from the catalogue (their
lookups succeed), codes with a wrong check digit (they fail at once, with the reason) and valid codes the
catalogue does not have (they fail after the lookup).

    python examples/upc_lookup/make_codes.py                   # .batchyard/upc_lookup/upcs.txt
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from processors import DATA_ENV, check_digit, data_dir  # this file's folder is on sys.path when run as a script

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--valid", type=int, default=20, help="Codes from the catalogue (at most its size).")
    parser.add_argument("--invalid", type=int, default=4, help="Codes with a wrong check digit.")
    parser.add_argument("--unknown", type=int, default=2, help="Valid codes the catalogue does not have.")
    parser.add_argument("--output", type=Path, default=None,
                        help=f"Where to write (default upcs.txt in ${DATA_ENV} or .batchyard/upc_lookup).")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    known = [p["upc"] for p in json.loads((HERE / "catalogue.json").read_text())["products"]]
    valid = known[:args.valid]
    invalid = []
    for code in rng.sample(known, args.invalid):  # a real code with its last digit changed: a typo
        wrong = (int(code[-1]) + rng.randint(1, 9)) % 10
        invalid.append(code[:-1] + str(wrong))
    unknown: list[str] = []
    while len(unknown) < args.unknown:
        body = "0" + "".join(str(rng.randint(0, 9)) for _ in range(10))
        code = body + str(check_digit(body))
        if code not in known:
            unknown.append(code)
    codes = valid + invalid + unknown
    rng.shuffle(codes)
    output = args.output or data_dir() / "upcs.txt"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text("".join(f"{code}\n" for code in codes))
    print(f"wrote {len(codes)} codes to {output}: {len(valid)} in the catalogue, {len(invalid)} with a wrong "
          f"check digit, {len(unknown)} unknown")


if __name__ == "__main__":
    main()
