"""``GET /batches/{id}/webhooks``: a batch's webhook deliveries, with every attempt."""

from __future__ import annotations

from fastapi import APIRouter, Request

from batchyard.server.deps import engine_of, owned
from batchyard.server.errors import ERROR_RESPONSES
from batchyard.server.schemas import DeliveryList

router = APIRouter(prefix="/batches", tags=["webhooks"], responses={404: ERROR_RESPONSES[404]})


@router.get("/{batch_id}/webhooks", response_model=DeliveryList,
            summary="The batch's webhook deliveries (oldest first), with each attempt's outcome")
def deliveries(batch_id: str, request: Request) -> DeliveryList:
    owned(request, batch_id)
    return DeliveryList(deliveries=engine_of(request).store.list_deliveries(batch_id))
