"""Serving views over REST against a real PostgreSQL: every read authenticated and limited to the
token's tenant, filters, time ranges, sorting, fields and cursor pages equal to direct SQL, bad
tokens and hostile parameters refused without leaking, a store outage answered with 503 and
recovered from, and rate limits shared by two ``headrace serve`` processes through Redis."""

from __future__ import annotations

import base64
import concurrent.futures
import json
import os
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jwt
import psycopg
import pytest
from headrace.connectors.postgres import ensure_table
from headrace.jobs.catalog import load_catalog
from headrace.jobs.profiles import load_profile
from headrace.jobs.serve import build

from tests.jobfiles import ROOT
from tests.services import Postgres, RedisServer, free_port_pair, listening_on

pytestmark = pytest.mark.integration
SECRET = "serve-test-secret-0123456789abcdef"
TENANTS, PAGES, WINDOWS = ("t1", "t2", "t3"), ("/", "/a", "/b", "/c"), 60
START = datetime(2026, 1, 1)


def token(sub: str = "alice", tenant: str | None = "t1", roles: list[str] | None = None, **claims: Any) -> str:
    body: dict[str, Any] = {"sub": sub, "exp": int(time.time()) + 600, **claims}
    if tenant is not None:
        body["tenant"] = tenant
    if roles is not None:
        body["roles"] = roles
    return jwt.encode(body, SECRET, algorithm="HS256")


def auth(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, pg: Postgres) -> tuple[Path, Path, str]:
    """A project whose one job writes ``<table>``, the table filled with known rows, and a profile."""
    root = tmp_path_factory.mktemp("serve")
    table = f"serve_{os.getpid()}"
    (root / "jobs").mkdir()
    (root / "jobs" / "pa.yaml").write_text(
        (ROOT / "jobs" / "page_activity.yaml").read_text().replace("page_activity_1m", table)
        .replace("schemas/click.schema.json", str(ROOT / "schemas" / "click.schema.json"))
        .replace("  - postgres: {table: " + table + "}",
                 "  - postgres: {table: " + table + "}\n  - postgres: {table: " + table + "_empty}"))
    profiles = root / "profiles.yaml"
    profiles.write_text(
        "profiles:\n  test:\n    kafka: {bootstrap_servers: '127.0.0.1:9'}\n"
        f"    postgres: {{host: 127.0.0.1, port: {pg.port}, database: postgres, user: postgres}}\n"
        "    serve:\n      auth: {hs256_secret: '${HEADRACE_TEST_JWT}'}\n"
        "      hide: {guest: [avg_ms, max_ms]}\n      timeout: 2s\n")
    os.environ["HEADRACE_TEST_JWT"] = SECRET
    view = load_catalog(root).get(table)
    assert view is not None
    ensure_table(pg.conninfo(), view.view)
    with psycopg.connect(**pg.conninfo(), autocommit=True) as conn, conn.cursor().copy(
            f'COPY "{table}" (tenant_id, page, window_start, window_end, events, total_bytes, avg_ms, min_ms, '
            "max_ms, _records) FROM STDIN") as copy:
        for w in range(WINDOWS):
            for t, tenant in enumerate(TENANTS):
                for p, page in enumerate(PAGES):
                    n = 1 + (w * 7 + t * 3 + p) % 13
                    start = START + timedelta(minutes=w)
                    copy.write_row((tenant, page, start, start + timedelta(minutes=1), n, n * 100, n / 2, 0, n, n))
    return root, profiles, table


@pytest.fixture(scope="module")
def client(project: tuple[Path, Path, str]) -> Any:
    from fastapi.testclient import TestClient

    root, profiles, _ = project
    with TestClient(build(root, load_profile("test", profiles))) as test_client:
        yield test_client


def wait_until_serving(port: int, timeout_s: float = 30, proc: subprocess.Popen[bytes] | None = None) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if proc is not None and proc.poll() is not None:
            output = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
            raise AssertionError(f"serve exited with code {proc.returncode}:\n{output[-2000:]}")
        assert time.monotonic() < deadline, "serve did not start"
        time.sleep(0.2)


def direct(pg: Postgres, table: str, where: str = "", params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(**pg.conninfo()) as conn:
        return conn.execute(f'SELECT tenant_id, page, window_start, events FROM "{table}" {where} '  # type: ignore[arg-type]
                            "ORDER BY window_start DESC, tenant_id DESC, page DESC, window_end DESC", params).fetchall()


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def test_a_tenant_reads_its_rows_filtered_paged_and_equal_to_direct_sql(
        client: Any, project: tuple[Path, Path, str], pg: Postgres) -> None:
    _, _, table = project
    since = START + timedelta(minutes=10)
    rows, cursor, pages = [], None, 0
    while True:
        params: dict[str, Any] = {"page": ["/a", "/b"], "since": iso(since), "limit": 25}
        if cursor:
            params["cursor"] = cursor
        answer = client.get(f"/v1/views/{table}", params=params, headers=auth(token()))
        assert answer.status_code == 200, answer.text
        body = answer.json()
        rows += body["rows"]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    want = direct(pg, table, "WHERE tenant_id = 't1' AND page IN ('/a', '/b') AND window_start >= %s", (since,))
    assert [(r["tenant_id"], r["page"], r["window_start"], r["events"]) for r in rows] == [
        (t, p, iso(s), n) for t, p, s, n in want]
    assert pages == -(-len(want) // 25) and {r["tenant_id"] for r in rows} == {"t1"}
    # fields, ascending sort on a key column
    answer = client.get(f"/v1/views/{table}", params={"fields": "page,events", "sort": "page", "limit": 3},
                        headers=auth(token()))
    assert [set(r) for r in answer.json()["rows"]] == [{"page", "events"}] * 3
    assert [r["page"] for r in answer.json()["rows"]] == ["/", "/", "/"]


def test_pages_stay_exact_while_measures_are_upserted(client: Any, project: tuple[Path, Path, str],
                                                      pg: Postgres) -> None:
    _, _, table = project
    stop = threading.Event()

    def upserts() -> None:
        with psycopg.connect(**pg.conninfo(), autocommit=True) as conn:
            while not stop.is_set():
                conn.execute(f'UPDATE "{table}" SET events = events + 1, _records = _records + 1 '  # type: ignore[arg-type]
                             "WHERE tenant_id = 't2' AND page = '/'")
    writer = threading.Thread(target=upserts)
    writer.start()
    try:
        seen, cursor = [], None
        while True:
            params = {"limit": 7, **({"cursor": cursor} if cursor else {})}
            body = client.get(f"/v1/views/{table}", params=params, headers=auth(token(tenant="t2"))).json()
            seen += [(r["page"], r["window_start"]) for r in body["rows"]]
            cursor = body["next_cursor"]
            if cursor is None:
                break
    finally:
        stop.set()
        writer.join()
    assert len(seen) == len(set(seen)) == WINDOWS * len(PAGES)  # none twice, none missing


def test_another_tenant_is_refused_and_all_tenants_needs_its_role(client: Any, project: tuple[Path, Path, str]) -> None:
    _, _, table = project
    assert client.get(f"/v1/views/{table}", params={"tenant_id": "t2"}, headers=auth(token())).status_code == 403
    assert client.get(f"/v1/views/{table}", params={"tenant_id": ["t1", "t2"]},
                      headers=auth(token())).status_code == 403
    assert client.get(f"/v1/views/{table}", headers=auth(token(tenant=None))).status_code == 403
    admin = client.get(f"/v1/views/{table}", params={"limit": 1000},
                       headers=auth(token(tenant=None, roles=["all_tenants"])))
    assert {r["tenant_id"] for r in admin.json()["rows"]} == set(TENANTS)


def test_bad_tokens_get_401_and_nothing_else(client: Any, project: tuple[Path, Path, str]) -> None:
    _, _, table = project
    header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    payload = base64.urlsafe_b64encode(json.dumps({"sub": "x", "tenant": "t1", "exp": 2**40}).encode()).rstrip(b"=")
    bad = {
        "none": None,
        "not a bearer": "Basic abc",
        "malformed": "Bearer not.a.jwt",
        "alg none": f"Bearer {header}.{payload.decode()}.",
        "wrong secret": "Bearer " + jwt.encode({"sub": "x", "tenant": "t1", "exp": 2**40},
                                               "another-secret-0123456789abcdefghij", algorithm="HS256"),
        "expired": "Bearer " + token(exp=int(time.time()) - 60),
        "not yet valid": "Bearer " + token(nbf=int(time.time()) + 600),
        "no exp": "Bearer " + jwt.encode({"sub": "x", "tenant": "t1"}, SECRET, algorithm="HS256"),
        "oversized": "Bearer " + token(padding="x" * 10_000),
        "tenant not a string": "Bearer " + jwt.encode({"sub": "x", "tenant": ["t1", "t2"], "exp": 2**40}, SECRET,
                                                      algorithm="HS256"),
    }
    for what, value in bad.items():
        answer = client.get(f"/v1/views/{table}", headers={"Authorization": value} if value else {})
        assert answer.status_code == 401, what
        assert answer.json() == {"error": "unauthorized"}, what
        assert answer.headers["www-authenticate"] == "Bearer"


HOSTILE = ["' OR '1'='1", "t1' OR tenant_id <> 't1", "1; DROP TABLE x; --", "../../etc/passwd", "%00", "\x00",
           '"; SELECT pg_sleep(5); --', "t1\\", "${jndi:ldap://x}", "🙂" * 50]


def test_hostile_parameters_change_no_sql_and_leak_no_rows(client: Any, project: tuple[Path, Path, str],
                                                           pg: Postgres) -> None:
    _, _, table = project
    before = len(direct(pg, table))
    for value in HOSTILE:
        for name in ("tenant_id", "page", "since", "until", "sort", "fields", "limit", "cursor", value[:20]):
            answer = client.get(f"/v1/views/{table}", params={name: value}, headers=auth(token()))
            assert answer.status_code in (200, 400, 403), (name, value, answer.text)
            if answer.status_code == 200:
                assert all(r.get("tenant_id", "t1") == "t1" for r in answer.json()["rows"]), (name, value)
            else:
                assert set(answer.json()) == {"error"} and "Traceback" not in answer.text
        assert client.get(f"/v1/views/{quote(value, safe='')}", headers=auth(token())).status_code in (404, 400)
    assert len(direct(pg, table)) == before  # nothing was changed
    answer = client.get(f"/v1/views/{table}", params={"windw": "x"}, headers=auth(token()))
    assert answer.status_code == 400 and "unknown parameter 'windw'" in answer.json()["error"]


def test_etag_gzip_hidden_measures_empty_views_and_openapi(client: Any, project: tuple[Path, Path, str]) -> None:
    _, _, table = project
    first = client.get(f"/v1/views/{table}", params={"limit": 200},
                       headers={**auth(token()), "Accept-Encoding": "gzip"})
    assert first.headers["content-encoding"] == "gzip" and first.headers["etag"]
    again = client.get(f"/v1/views/{table}", params={"limit": 200},
                       headers={**auth(token()), "If-None-Match": first.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    guest = client.get(f"/v1/views/{table}", params={"limit": 1}, headers=auth(token(roles=["guest"]))).json()
    assert "avg_ms" not in guest["rows"][0] and "events" in guest["rows"][0]
    hidden = client.get(f"/v1/views/{table}", params={"fields": "avg_ms"}, headers=auth(token(roles=["guest"])))
    assert hidden.status_code == 400
    empty = client.get(f"/v1/views/{table}_empty", headers=auth(token())).json()
    assert empty["rows"] == [] and "no table yet" in empty["note"]
    listed = client.get("/v1/views", headers=auth(token())).json()["views"]
    assert {v["name"] for v in listed} == {table, f"{table}_empty"}
    spec = client.get("/openapi.json").json()
    names = {p["name"] for p in spec["paths"][f"/v1/views/{table}"]["get"]["parameters"]}
    assert {"tenant_id", "page", "since", "until", "sort", "fields", "limit", "cursor"} <= names
    assert "headrace_serve_requests" in client.get("/metrics").text


def test_a_store_outage_is_503_in_one_line_and_service_resumes(client: Any, project: tuple[Path, Path, str],
                                                               pg: Postgres) -> None:
    _, _, table = project
    pg.shut_down()
    try:
        started = time.monotonic()
        answer = client.get(f"/v1/views/{table}", headers=auth(token()))
        assert answer.status_code == 503 and time.monotonic() - started < 6
        assert answer.json()["error"].startswith(f"PostgreSQL 127.0.0.1:{pg.port} unavailable")
        assert "\n" not in answer.json()["error"]
        health = client.get("/healthz")
        assert health.status_code == 503 and "PostgreSQL" in health.json()["stores"]["postgres"]
    finally:
        pg.start_again()
    deadline = time.monotonic() + 20
    while client.get(f"/v1/views/{table}", headers=auth(token())).status_code != 200:
        assert time.monotonic() < deadline, "service did not resume"
        time.sleep(0.5)
    assert client.get("/healthz").json()["stores"]["postgres"] == "ok"


def test_two_serve_processes_share_the_rate_limit_through_redis(
        project: tuple[Path, Path, str], redis_server: RedisServer, tmp_path: Path) -> None:
    import httpx

    root, profiles, table = project
    limited = tmp_path / "profiles.yaml"
    limited.write_text(profiles.read_text().replace(
        "      timeout: 2s\n",
        "      timeout: 2s\n      rate: {per_token: 1000, per_token_burst: 1000, total: 20, total_burst: 10}\n")
        + f"    redis: {{port: {redis_server.port}}}\n")
    ports = [free_port_pair(), free_port_pair()]
    while abs(ports[0] - ports[1]) < 2:
        ports[1] = free_port_pair()
    servers = [subprocess.Popen([sys.executable, "-m", "headrace.jobs.cli", "serve", "--project", str(root),
                                 "--profile", "test", "--profiles", str(limited), "--port", str(port)],
                                env={**os.environ, "HEADRACE_TEST_JWT": SECRET}, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True) for port in ports]
    try:
        for port, server in zip(ports, servers, strict=True):
            wait_until_serving(port, proc=server)
        seconds = 3.0
        started = time.monotonic()

        def hammer(i: int) -> tuple[int, int]:
            ok = limited_count = 0
            with httpx.Client(base_url=f"http://127.0.0.1:{ports[i % 2]}", headers=auth(token(sub=f"c{i}"))) as c:
                while time.monotonic() - started < seconds:
                    answer = c.get(f"/v1/views/{table}", params={"limit": 1})
                    if answer.status_code == 200:
                        ok += 1
                    else:
                        assert answer.status_code == 429 and int(answer.headers["retry-after"]) >= 1
                        limited_count += 1
            return ok, limited_count

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            results = list(pool.map(hammer, range(8)))
        elapsed = time.monotonic() - started
        admitted = sum(r[0] for r in results)
        assert sum(r[1] for r in results) > 0
        # 20/s for the elapsed time plus a burst of 10, within one bucket either way
        assert admitted <= 20 * elapsed + 10 + 10, (admitted, elapsed)
        assert admitted >= 20 * seconds - 10, (admitted, elapsed)
        # Redis away: each process falls back to its own bucket and says so
        redis_server.shut_down()
        try:
            assert httpx.get(f"http://127.0.0.1:{ports[0]}/v1/views/{table}", params={"limit": 1},
                             headers=auth(token(sub="late")), timeout=5).status_code in (200, 429)
            health = httpx.get(f"http://127.0.0.1:{ports[0]}/healthz", timeout=5).json()
            assert "per process" in health["rate_limiter"]
        finally:
            redis_server.start_again()
    finally:
        for server in servers:
            server.terminate()
            server.wait(10)
    for server in servers:
        output = server.stdout.read().decode() if server.stdout else ""
        assert "Traceback" not in output, output[-2000:]


def test_headrace_query_reads_locally_and_from_a_running_serve(project: tuple[Path, Path, str], pg: Postgres) -> None:

    root, profiles, table = project
    env = {**os.environ, "HEADRACE_TEST_JWT": SECRET}
    common = ["--where", "page=/a", "--since", iso(START + timedelta(minutes=50)), "--limit", "500", "--format", "json"]
    local = subprocess.run([sys.executable, "-m", "headrace.jobs.cli", "query", table, *common, "--project", str(root),
                            "--profile", "test", "--profiles", str(profiles)], capture_output=True, text=True, env=env)
    assert local.returncode == 0, local.stderr
    rows = json.loads(local.stdout)["rows"]
    assert len(rows) == len(TENANTS) * 10 and {r["page"] for r in rows} == {"/a"}  # all tenants: an operator's read

    port = free_port_pair()
    server = subprocess.Popen([sys.executable, "-m", "headrace.jobs.cli", "serve", "--project", str(root),
                               "--profile", "test", "--profiles", str(profiles), "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_until_serving(port, proc=server)
        remote = subprocess.run([sys.executable, "-m", "headrace.jobs.cli", "query", table, *common, "--url",
                                 f"http://127.0.0.1:{port}"], capture_output=True, text=True,
                                env={**env, "HEADRACE_TOKEN": token(tenant="t2")})
        assert remote.returncode == 0, remote.stderr
        assert json.loads(remote.stdout)["rows"] == [r for r in rows if r["tenant_id"] == "t2"]
        refused = subprocess.run([sys.executable, "-m", "headrace.jobs.cli", "query", table, "--url",
                                  f"http://127.0.0.1:{port}"], capture_output=True, text=True,
                                 env={**env, "HEADRACE_TOKEN": "not-a-token"})
        assert refused.returncode == 2 and refused.stderr.strip().endswith("answered 401: unauthorized")
        assert listening_on(port) == {"0100007F"}  # 127.0.0.1 only
    finally:
        server.terminate()
        server.wait(10)
