"""``unified serve``: an exported model behind HTTP (FastAPI + uvicorn), in the protocols clients speak.

* Native: ``POST /predict`` ``{"inputs": [[...], ...]}`` -> ``{"outputs", "predictions"}``; ``GET /health``,
  ``GET /metadata`` (the manifest plus the serving settings). A model trained on ``imagefolder:`` also takes
  image files (multipart field ``file``): :mod:`unified.serve.images`.
* Open Inference Protocol v2 (KServe, Triton, ``tritonclient.http``): :mod:`unified.serve.v2`.
* TensorFlow Serving REST (``/v1/models/{name}:predict``, ``instances`` / ``inputs``): :mod:`unified.serve.tfserving`.
* Adaptive batching of concurrent requests into one runtime call: :mod:`unified.serve.batching`.
* ``GET /metrics`` (Prometheus) and access logs: :mod:`unified.serve.metrics`; ``GET /openapi.json``.

Bad requests never reach the model and never stop the server: each gets a 4xx with a one-line reason.
Importing this package imports no web framework, runtime or JSON library; :func:`create_app` and
:func:`serve` import them (``pip install "unified-trainer[serve]"``).
"""

from unified.serve.app import DEFAULT_BATCH_TIMEOUT_MS, DEFAULT_MAX_BATCH, build_app, check_port, create_app, serve
from unified.serve.model import ServedModel, load_model, predictions, resolve_artifact
from unified.serve.tensors import DEFAULT_MAX_BODY, DEFAULT_MAX_ROWS, BadRequest, parse_inputs

__all__ = ["serve", "create_app", "build_app", "check_port", "load_model", "resolve_artifact", "ServedModel",
           "predictions", "parse_inputs", "BadRequest", "DEFAULT_MAX_ROWS", "DEFAULT_MAX_BODY", "DEFAULT_MAX_BATCH",
           "DEFAULT_BATCH_TIMEOUT_MS"]
