"""``GET /batches/{id}/timeline``: succeeded and failed items per time bucket, for the dashboard's chart.

Drawn from the items' stored ``finished_at``, so the chart is the same after a reload, on another screen
or after a restart; the store picks the bucket width (at most ``TIMELINE_POINTS`` points).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from batchyard.core.models import TIMELINE_POINTS
from batchyard.server.deps import engine_of, owned
from batchyard.server.errors import ERROR_RESPONSES
from batchyard.server.schemas import Timeline

router = APIRouter(prefix="/batches", tags=["batches"], responses={404: ERROR_RESPONSES[404]})

# A millisecond at the finest (finer buckets would only be empty), a year at the widest.
MIN_BUCKET_S, MAX_BUCKET_S = 0.001, 366 * 86400.0


@router.get("/{batch_id}/timeline", response_model=Timeline,
            summary="Succeeded and failed items per time bucket (throughput and failures over time)")
def timeline(batch_id: str, request: Request,
             bucket_seconds: Annotated[float | None, Query(
                 ge=MIN_BUCKET_S, le=MAX_BUCKET_S,
                 description=f"Bucket width; widened if it would give more than {TIMELINE_POINTS} points. "
                             "Default: a round width for the batch's run so far.")] = None) -> Timeline:
    owned(request, batch_id)
    return Timeline(points=engine_of(request).store.timeline(batch_id, bucket_seconds))
