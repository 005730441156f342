"""A schema-driven fuzzer (schemathesis) against the server's own /openapi.json: no 5xx, no hang, still up.

Every operation is fuzzed in schemathesis' positive mode (bodies valid for the schema, most of them still
wrong for the model) and negative mode (bodies, paths and names that violate it). The path parameters are
pinned to the served model's name and version in positive mode so bodies reach the parsers behind them.
Bounded: a fixed seed, ``EXAMPLES`` per operation and mode, a 10 s timeout on every request.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
schemathesis = pytest.importorskip("schemathesis")
requests = pytest.importorskip("requests")
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402

EXAMPLES = 15


def _pinned(doc: dict, name: str) -> dict:
    doc = copy.deepcopy(doc)
    for ops in doc["paths"].values():
        for op in ops.values():
            for p in op.get("parameters", []):
                if p["name"] == "model_name":
                    p["schema"] = {"type": "string", "enum": [name]}
                elif p["name"] == "model_version":
                    p["schema"] = {"type": "string", "enum": ["1"]}
    return doc


def test_fuzzer_finds_no_server_error_and_no_hang(served, reference, record_property):
    from schemathesis import GenerationMode

    url = served["url"]
    doc = httpx.get(url + "/openapi.json").json()
    modes = {GenerationMode.POSITIVE: schemathesis.openapi.from_dict(_pinned(doc, served["name"])),
             GenerationMode.NEGATIVE: schemathesis.openapi.from_dict(doc)}
    sent: list[tuple[str, int]] = []
    errors: list[str] = []
    session = requests.Session()
    for mode, schema in modes.items():
        for result in schema.get_all_operations():
            op = result.ok()
            if mode == GenerationMode.NEGATIVE and op.method.upper() != "POST":
                continue  # a GET here has only string path parameters: nothing a negative case can break

            @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                      phases=[Phase.generate], suppress_health_check=list(HealthCheck))
            @given(case=op.as_strategy(generation_mode=mode))
            def fuzz(case) -> None:
                r = case.call(base_url=url, session=session, timeout=10)
                sent.append((f"{op.method.upper()} {op.path}", r.status_code))
                if r.status_code >= 500:
                    errors.append(f"{case.method} {case.formatted_path} -> {r.status_code}: {r.text[:200]}")

            try:
                fuzz()
            except Unsatisfiable:  # an operation without parameters or body: nothing to vary
                pass
    session.close()
    record_property("fuzz_requests", len(sent))
    print(f"\nfuzzer: {len(sent)} requests over {len({s for s, _ in sent})} operations, "
          f"{sum(c >= 500 for _, c in sent)} answered 5xx")
    assert not errors, errors[:5]
    assert len(sent) >= 100
    assert served["proc"].poll() is None
    x = served["x"][:4]
    r = httpx.post(url + "/predict", json={"inputs": x.tolist()})
    assert r.status_code == 200 and np.abs(np.array(r.json()["outputs"], np.float32) - reference(x)).max() <= 1e-6
