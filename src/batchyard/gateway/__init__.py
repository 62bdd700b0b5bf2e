"""An OpenAI-compatible batch gateway: OpenAI's ``/v1/files`` and ``/v1/batches`` served over ordinary
batchyard batches, each line sent to a configured OpenAI-compatible upstream by the ``openai-request``
processor, with per-key limits shared by every worker on the store.

``routes`` is the ``/v1`` router (enabled by ``batchyard serve --upstream URL``), ``processor`` the processor,
``upstream`` the HTTP client and its shared limits (arithmetic in ``limits``), ``batches`` the translation
between batchyard's batches and OpenAI's batch objects and files, ``pricing`` the cost of a batch.
"""
