"""``batchyard estimate`` and ``batchyard budget``: see what a batch will cost before it runs, and cap it.

``estimate`` prices every item with the processor's cost model (nothing is created), or runs a random sample
for real (``--sample N``) and extrapolates. A sample is the first part of the batch itself: it is created as
``batchyard run`` would create it (same input, processor and params, so ``run`` finds it), left pending, and
its sampled items are never run again.
"""

from __future__ import annotations

from contextlib import closing
from typing import Annotated

import typer

from batchyard.api import fingerprint
from batchyard.cli.main import (
    EXIT_FAILED,
    ApiKeyOpt,
    BudgetOpt,
    InputFormatOpt,
    JsonOpt,
    ParallelOpt,
    ParamOpt,
    ParamsJsonOpt,
    ProcessorOpt,
    ProcessorsOpt,
    RecursiveOpt,
    StoreOpt,
    UrlOpt,
    _backend,
    _engine,
    _parse_params,
    _parse_params_json,
    err,
    fail,
    out,
    print_control,
)
from batchyard.core import processor as registry
from batchyard.core.engine import Engine
from batchyard.core.errors import BatchyardError, ConfigError, InputError, ProcessorNotFound
from batchyard.core.models import BatchSpec, Estimate
from batchyard.io import inputs


def estimate(
    input: Annotated[str, typer.Argument(envvar="BATCHYARD_INPUT", help="Input (any input `run` takes).")],
    processor: ProcessorOpt,
    param: ParamOpt = None,
    params_json: ParamsJsonOpt = None,
    parallel: ParallelOpt = 8,
    sample: Annotated[int, typer.Option(
        "--sample", min=0, help="Run this many random items for real and extrapolate (their results are kept: "
                                "`batchyard run` on the same input continues the batch).")] = 0,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed of the random sample (to repeat it).")] = None,
    budget: BudgetOpt = None,
    new: Annotated[bool, typer.Option("--new", help="With --sample: a new batch even if this input ran before.")]
        = False,
    input_format: InputFormatOpt = None,
    recursive: RecursiveOpt = False,
    json_: JsonOpt = False,
    store: StoreOpt = None,
    processors: ProcessorsOpt = None,
) -> None:
    """Count the items, and estimate the total cost and duration: from the processor's cost model, or from a
    random sample run for real (--sample N)."""
    params = {**_parse_params_json(params_json), **_parse_params(param)}
    try:
        registry.load(processors or [])
        proc = registry.get(processor)
        Engine.check_params(proc, params)
        source = inputs.open_input(input, input_format, processor=proc, params=params, recursive=recursive)
        engine = _engine(store, processors)
        spec = BatchSpec(processor=proc.name, params=params, parallel=parallel, source=source.name, budget=budget,
                         fingerprint=fingerprint(proc.name, params, source.fingerprint(), source.format))
        found = None if new or not sample else engine.store.find_resumable(spec.fingerprint or "")
        if found is not None and found.is_final:
            fail(f"{found.batch_id} already ran this input ({found.status}); --new samples a new batch", EXIT_FAILED)
        if found is not None:
            result = engine.sample_batch(found.batch_id, sample, seed=seed)
        else:
            result = engine.estimate(spec, source.items(), sample=sample, seed=seed)
    except (InputError, ConfigError, ProcessorNotFound) as exc:
        fail(str(exc))
    except BatchyardError as exc:
        fail(str(exc), EXIT_FAILED)
    if json_:
        out.print_json(result.model_dump_json())
        return
    print_estimate(result, source.name)


def print_estimate(e: Estimate, name: str) -> None:
    unit = e.cost_unit
    out.print(f"{name}: {e.items:,} items through {e.processor!r}", highlight=False)
    if e.sample is not None:
        s = e.sample
        out.print(f"  sample: {s.size} items run ({s.succeeded} succeeded, {s.failed} failed) in {s.seconds:.2f}s, "
                  f"cost {s.cost:.6g} {unit}", highlight=False)
    if e.cost_estimated is None:
        out.print("  estimated cost: unknown (the processor declares no cost and reports none)", highlight=False)
    else:
        how = "extrapolated from the sample" if e.method == "sample" else "from the cost model"
        model = f"; the cost model says {e.cost_model_total:.6g} {unit}" \
            if e.method == "sample" and e.cost_model_total is not None else ""
        per = f"{e.cost_per_item:.6g} {unit} per item, " if e.cost_per_item is not None else ""
        out.print(f"  estimated cost {e.cost_estimated:.6g} {unit} ({per}{how}{model})", highlight=False)
    took = "unknown (no item of this processor has run yet: --sample N runs some)" if e.duration_s is None \
        else f"{human_seconds(e.duration_s)} at parallel {e.parallel}"
    out.print(f"  estimated time {took}", highlight=False)
    if e.batch_id:
        out.print(f"  {e.batch_id} keeps the sample's results: `batchyard run` with the same input and options "
                  "runs the rest", highlight=False)


def human_seconds(seconds: float) -> str:
    """``2h 5m``, ``3m 20s``, ``4.2s``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    m, s = divmod(round(seconds), 60)
    if m < 60:
        return f"{m}m {s}s"
    h, m = divmod(m, 60)
    return f"{h}h {m}m"


def budget_cmd(
    batch_id: str,
    amount: Annotated[float | None, typer.Argument(min=0.0, help="The new budget; omit with --remove.")] = None,
    remove: Annotated[bool, typer.Option("--remove", help="Remove the budget.")] = False,
    no_resume: Annotated[bool, typer.Option("--no-resume", help="Leave a batch paused at its old budget paused.")]
        = False,
    store: StoreOpt = None,
    url: UrlOpt = None,
    api_key: ApiKeyOpt = None,
) -> None:
    """Set a batch's budget; a batch paused because it reached its old one continues (unless --no-resume)."""
    if (amount is None) == (not remove):
        fail("give the new budget, or --remove")
    with closing(_backend(store, url, api_key)) as backend:
        info = backend.set_budget(batch_id, None if remove else amount)
        if not no_resume and info.status == "paused" and info.pause_reason == "budget_reached":
            info = backend.control("resume", batch_id)
    print_control(info)
    if info.budget is not None:
        err.print(f"budget {info.budget:.6g} {info.cost_unit}; {info.cost_total:.6g} spent", highlight=False)
