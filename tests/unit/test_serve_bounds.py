"""Serving bounds what one request can cost: a GraphQL fragment bomb, a query of many megabytes,
many distinct big queries. Each is a 400 in well under a second, and the server goes on answering.

The application is built in-process on the embedded profile (views in SQLite, no servers)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from headrace.jobs.profiles import load_profile

ROOT = Path(__file__).resolve().parents[2]
SECRET = "unit-test-secret-of-at-least-32-bytes!"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from fastapi.testclient import TestClient
    from headrace.jobs import serve

    root = tmp_path_factory.mktemp("serve")
    (root / "jobs").mkdir()
    (root / "jobs" / "page_activity.yaml").write_text((ROOT / "jobs" / "page_activity.yaml").read_text().replace(
        "schemas/click.schema.json", str(ROOT / "schemas" / "click.schema.json")))
    profiles = root / "profiles.yaml"
    profiles.write_text(f"profiles:\n  local:\n    embedded: {{data_dir: {root / 'local'}}}\n"
                        f"    serve: {{auth: {{hs256_secret: '{SECRET}'}}}}\n")
    app = serve.build(root, load_profile("local", profiles))
    with TestClient(app) as test_client:
        yield test_client


def auth() -> dict[str, str]:
    claims = {"sub": "alice", "tenant": "t1", "exp": int(time.time()) + 600}
    return {"authorization": "Bearer " + jwt.encode(claims, SECRET, algorithm="HS256")}


def timed(call: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    result = call()
    return result, time.perf_counter() - started


def fragment_bomb(levels: int) -> str:
    """``levels`` fragments, each spreading the next twice: 2^levels fields once expanded."""
    fragments = [f"fragment F{i} on PageActivity1m {{ ...F{i + 1} ...F{i + 1} }}" for i in range(levels)]
    fragments.append(f"fragment F{levels} on PageActivity1m {{ events }}")
    return "query { page_activity_1m { rows { ...F0 } } } " + " ".join(fragments)


def test_a_fragment_bomb_is_refused_at_once(client: Any) -> None:
    response, seconds = timed(lambda: client.post("/graphql", json={"query": fragment_bomb(23)}, headers=auth()))
    assert response.status_code in (200, 400)
    errors = response.json()["errors"]
    assert "query too complex: more than 2,000 fields and fragment spreads" in errors[0]["message"], errors
    assert seconds < 2.0, seconds
    fine = client.post("/graphql", json={"query": "{ page_activity_1m { rows { events } } }"}, headers=auth())
    assert fine.status_code == 200 and "errors" not in fine.json(), fine.text


@pytest.mark.parametrize("size", [1_000_000, 10_000_000])
def test_a_query_of_megabytes_is_400_unread(client: Any, size: int) -> None:
    query = "{ page_activity_1m { rows { events } } }" + " " * size
    response, seconds = timed(lambda: client.post("/graphql", json={"query": query}, headers=auth()))
    assert response.status_code == 400
    assert response.json()["error"].startswith("request too large:") and "serve.max_request_bytes" in response.text
    assert seconds < 2.0, seconds


def test_a_chunked_body_without_length_is_cut_off_too(client: Any) -> None:
    def chunks() -> Any:
        for _ in range(200):
            yield b"x" * 10_000

    response = client.post("/graphql", content=chunks(), headers={**auth(), "content-type": "application/json"})
    assert response.status_code == 400 and "request too large" in response.text


def test_many_distinct_big_queries_stay_cheap(client: Any) -> None:
    """60 KB each (under the byte bound), all different: bounded by tokens before parsing."""
    slowest = 0.0
    for i in range(40):
        body = {"query": "{ " + " ".join(f"a{i}_{j}: page_activity_1m {{ rows {{ events }} }}"
                                         for j in range(1_200)) + " }"}
        response, seconds = timed(lambda body=body: client.post("/graphql", json=body, headers=auth()))
        assert "more than 8000 tokens" in response.json()["errors"][0]["message"]
        slowest = max(slowest, seconds)
    assert slowest < 2.0, slowest  # ~0.04 s each on an idle 2-core machine (60 s each before the bound)
    fine = client.post("/graphql", json={"query": "{ page_activity_1m { rows { events } } }"}, headers=auth())
    assert fine.status_code == 200 and "errors" not in fine.json()
