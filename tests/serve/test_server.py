"""The HTTP server answers as the offline Predictor does, refuses malformed requests with 4xx naming
the field, turns a burst away with 503 and swaps bundles without failing a request."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import threading
from pathlib import Path

import httpx
import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from starlette.testclient import TestClient

from terarec.serve import Predictor
from terarec.serve.bundle import export_bundle, load_bundle
from terarec.serve.recommender import Query, Recommender
from terarec.serve.server import ServerSettings, create_app

LOOPBACK = ("127.0.0.1", 50000)


@pytest.fixture(scope="module")
def bundles(serve_runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bundles")
    return {"hstu": export_bundle([serve_runs["retrieval"], serve_runs["ranking"]], root / "hstu", threads=1),
            "ctr": export_bundle([serve_runs["retrieval"], serve_runs["ctr"]], root / "ctr", threads=1)}


@pytest.fixture(scope="module")
def user(serve_runs: dict[str, Path]) -> dict:
    """One user's last events from the data: items, timestamps, actions and profile."""
    table = pq.read_table(sorted(serve_runs["data"].glob("part-*.parquet"))[0])
    mine = table.filter(pc.equal(table.column("user_id"), table.column("user_id")[5])).sort_by("timestamp")
    mine = mine.slice(max(0, mine.num_rows - 8))
    return {"user_id": int(mine.column("user_id")[0].as_py()),
            "history": {"items": mine.column("item_id").to_pylist(), "timestamps": mine.column("timestamp").to_pylist(),
                        "actions": {name: [float(v) for v in mine.column(name).to_pylist()]
                                    for name in ("click", "like", "watch_time")}},
            "context": {"age_bucket": mine.column("age_bucket")[0].as_py(), "gender": mine.column("gender")[0].as_py(),
                        "hour": mine.column("hour")[-1].as_py(), "device": mine.column("device")[-1].as_py()}}


def _client(bundle: Path, **options) -> TestClient:
    return TestClient(create_app(ServerSettings(bundle=bundle, threads=1, **options)), client=LOOPBACK)


def test_served_scores_equal_the_offline_predictor(bundles: dict[str, Path], user: dict,
                                                   serve_runs: dict[str, Path]) -> None:
    with _client(bundles["hstu"]) as client:
        answer = client.post("/v1/recommend", json={**user, "k": 20}).json()
        assert set(answer["stage_ms"]) == {"retrieval", "ranking"}
        assert len(answer["items"]) == 20 and not set(answer["items"]) & set(user["history"]["items"])
        retrieval_only = client.post("/v1/recommend", json={**user, "k": 5, "candidates": None}).json()
        assert retrieval_only["items"]
    # stage 2 (M-FALCON over the cached history) against the full forward pass of the run's Predictor
    recommender = Recommender(load_bundle(bundles["hstu"], threads=1))
    history = user["history"]
    query = Query(items=np.array(history["items"]), timestamps=np.array(history["timestamps"]),
                  actions=history["actions"], user_id=user["user_id"], context=user["context"], k=20)
    rows = recommender.ranking_rows(query, np.array(answer["items"]))
    offline = Predictor.from_run(serve_runs["ranking"], threads=1).score(rows)
    for name, values in answer["task_scores"].items():
        assert float(np.abs(np.array(values) - offline[name]).max()) <= 1e-5
    assert answer["scores"] == sorted(answer["scores"], reverse=True)
    # stage 1 against the sequential run's own catalogue ranking (the index is exact for a small catalogue)
    items, scores = Predictor.from_run(serve_runs["retrieval"], threads=1).recommend(
        history["items"], history["timestamps"], k=256)
    retrieved, _ = recommender._retrieve([query])
    np.testing.assert_array_equal(retrieved[0], items[:retrieved[0].size])


def test_served_ctr_scores_equal_the_offline_predictor(bundles: dict[str, Path], user: dict,
                                                       serve_runs: dict[str, Path]) -> None:
    candidates = [int(i) for i in load_bundle(bundles["ctr"]).retrieval.item_raw_ids[:30]]
    with _client(bundles["ctr"]) as client:
        answer = client.post("/v1/recommend", json={**user, "k": 30, "candidates": candidates,
                                                    "exclude_seen": False}).json()
        rows = [{"user_id": user["user_id"], "item_id": item, **user["context"]} for item in candidates]
        catalogue = load_bundle(bundles["ctr"]).ranking.catalogue.to_pylist()
        features = {row["item_id"]: row for row in catalogue}
        rows = [{**features.get(row["item_id"], {}), **row} for row in rows]
        scored = client.post("/v1/score", json={"rows": rows}).json()
    offline = Predictor.from_run(serve_runs["ctr"], threads=1)
    import pyarrow as pa

    expected = offline.score(pa.Table.from_pylist(rows))["click"]
    assert float(np.abs(np.array(scored["scores"]["click"]) - expected).max()) <= 1e-5
    by_item = dict(zip(candidates, expected))
    assert float(np.abs(np.array(answer["scores"]) - np.array([by_item[i] for i in answer["items"]])).max()) <= 1e-5


MALFORMED = {
    "wrong type": ({"history": {"items": "abc"}}, "items"),
    "float item id": ({"history": {"items": [1.5]}}, "items"),
    "empty history": ({"history": {"items": []}}, "items"),
    "history too long": ({"history": {"items": list(range(1, 100))}}, "items"),
    "timestamps misaligned": ({"history": {"items": [1, 2], "timestamps": [1]}}, "history"),
    "k zero": ({"history": {"items": [1]}, "k": 0}, "k"),
    "k too large": ({"history": {"items": [1]}, "k": 100000}, "k"),
    "unknown field": ({"history": {"items": [1]}, "kk": 3}, "kk"),
    "no history": ({"user_id": 3}, "history"),
    "unknown action": ({"history": {"items": [1], "actions": {"dance": [1.0]}}, "candidates": [1, 2]}, "actions"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_requests_answer_4xx_naming_the_field(bundles: dict[str, Path], case: str) -> None:
    body, field = MALFORMED[case]
    with _client(bundles["hstu"]) as client:
        response = client.post("/v1/recommend", json=body)
        assert 400 <= response.status_code < 500, response.text
        assert field in json.dumps(response.json()["detail"])
        assert client.get("/healthz").json() == {"status": "ok"}


def test_malformed_json_oversized_body_and_bad_rows(bundles: dict[str, Path]) -> None:
    with _client(bundles["hstu"], max_body_bytes=1000) as client:
        bad_json = client.post("/v1/recommend", content=b"{not json", headers={"content-type": "application/json"})
        assert bad_json.status_code == 422 and "json" in bad_json.text.lower()
        big = client.post("/v1/recommend", json={"history": {"items": [1] * 2000}})
        assert big.status_code == 413
        streamed = client.post("/v1/recommend", content=(b"[1, " * 100 for _ in range(20)),
                               headers={"content-type": "application/json"})  # chunked: no Content-Length
        assert streamed.status_code == 413
        rows = client.post("/v1/score", json={"rows": [{"item_id": 1}]})
        assert rows.status_code == 422 and "rows" in rows.text and "hist_" in rows.text
        assert client.get("/healthz").status_code == 200
        metrics = client.get("/metrics").text
        assert 'terarec_requests_total{endpoint="/v1/recommend",status="413"} 2.0' in metrics
        assert "terarec_bundle_info" in metrics


def test_model_error_answers_500_with_a_request_id(bundles: dict[str, Path], monkeypatch) -> None:
    with _client(bundles["hstu"]) as client:
        recommender = client.app.state.served.recommender
        monkeypatch.setattr(recommender, "_rank_hstu", lambda *a: (_ for _ in ()).throw(RuntimeError("boom")))
        response = client.post("/v1/recommend", json={"history": {"items": [1, 2]}}, headers={"x-request-id": "abc"})
        assert response.status_code == 500 and response.json()["request_id"] == "abc"
        assert client.get("/healthz").status_code == 200
        monkeypatch.setattr(client.app.state.served, "recommender", None)  # the endpoint itself fails
        response = client.post("/v1/recommend", json={"history": {"items": [1, 2]}})
        assert response.status_code == 500 and response.json()["request_id"] == response.headers["x-request-id"]
        assert client.get("/healthz").status_code == 200
        assert 'terarec_requests_total{endpoint="/v1/recommend",status="500"} 2.0' in client.get("/metrics").text


def test_burst_beyond_the_queue_is_turned_away_with_503(bundles: dict[str, Path], user: dict) -> None:
    app = create_app(ServerSettings(bundle=bundles["hstu"], threads=1, queue_size=4, max_batch=2))
    served = app.state.served
    gate, answer = threading.Event(), served.answer
    served.answer = lambda jobs: (gate.wait(60), answer(jobs))[1]  # the worker holds its first batch

    async def burst() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app, client=LOOPBACK)
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                sent = [asyncio.create_task(client.post("/v1/recommend", json=user)) for _ in range(2 * 4 + 2)]
                for _ in range(6000):  # a 503 answers at once; the others wait (bounded: at most a minute)
                    if any(task.done() for task in sent):
                        break
                    await asyncio.sleep(0.01)
                gate.set()
                responses = await asyncio.gather(*sent)
                metrics = (await client.get("/metrics")).text
                return responses, metrics

    responses, metrics = asyncio.run(burst())
    statuses = [response.status_code for response in responses]
    # at most 2 in the held batch and 4 queued are answered; every other request is turned away
    assert set(statuses) == {200, 503} and 4 <= statuses.count(200) <= 6, statuses
    assert all(r.headers["retry-after"] == "1" for r in responses if r.status_code == 503)
    assert f'status="503"}} {float(statuses.count(503))}' in metrics


def test_reload_swaps_under_load_and_a_corrupt_bundle_is_refused(bundles: dict[str, Path], user: dict,
                                                                tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt"
    shutil.copytree(bundles["ctr"], corrupt)
    (corrupt / "ranking" / "weights.safetensors").write_bytes(b"garbage")
    app = create_app(ServerSettings(bundle=bundles["hstu"], threads=1))

    async def under_load() -> tuple[list[int], httpx.Response, httpx.Response, str]:
        transport = httpx.ASGITransport(app=app, client=LOOPBACK)
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                load = [client.post("/v1/recommend", json=user) for _ in range(40)]
                reload = client.post("/admin/reload", json={"path": str(bundles["ctr"])})
                results = await asyncio.gather(*load[:20], reload, *load[20:])
                refused = await client.post("/admin/reload", json={"path": str(corrupt)})
                ready = (await client.get("/readyz")).json()
                after = await client.post("/v1/recommend", json=user)
                assert after.status_code == 200
                return [r.status_code for r in results], results[20], refused, ready["path"]

    statuses, reloaded, refused, path = asyncio.run(under_load())
    assert statuses.count(200) == len(statuses), statuses
    assert reloaded.json()["status"] == "reloaded"
    assert refused.status_code == 409 and "weights.safetensors: sha256 mismatch" in refused.json()["reason"]
    assert path == str(bundles["ctr"])  # the refused bundle did not replace the served one


def test_reload_is_refused_to_other_clients(bundles: dict[str, Path]) -> None:
    with TestClient(create_app(ServerSettings(bundle=bundles["hstu"], threads=1)), client=("10.1.2.3", 1)) as client:
        assert client.post("/admin/reload").status_code == 403


def test_sighup_reloads_the_served_bundle(bundles: dict[str, Path]) -> None:
    app = create_app(ServerSettings(bundle=bundles["hstu"], threads=1))
    reloads = app.state.served.metrics.reloads

    async def hang_up() -> float:
        async with app.router.lifespan_context(app):
            os.kill(os.getpid(), signal.SIGHUP)
            for _ in range(3000):  # bounded: at most 30 s
                if reloads.labels("ok")._value.get() >= 2:
                    break
                await asyncio.sleep(0.01)
        return reloads.labels("ok")._value.get()

    assert asyncio.run(hang_up()) == 2  # the start-up load, then the reload


def test_a_real_server_on_loopback_answers_and_stops(bundles: dict[str, Path], user: dict) -> None:
    from terarec.serve.server import running_server

    with running_server(ServerSettings(bundle=bundles["hstu"], threads=1)) as url:
        assert url.startswith("http://127.0.0.1:")
        answer = httpx.post(f"{url}/v1/recommend", json={**user, "k": 3}, timeout=60)
        assert answer.status_code == 200 and len(answer.json()["items"]) == 3
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/healthz", timeout=5)


def test_a_batch_of_queries_answers_as_each_query_alone(bundles: dict[str, Path], user: dict) -> None:
    for name in ("hstu", "ctr"):
        recommender = Recommender(load_bundle(bundles[name], threads=1))
        history = user["history"]
        # the last query has no timestamps: its default (0, 1, ...) must not change the others'
        queries = [Query(items=np.array(history["items"][cut:]),
                         timestamps=None if cut == 5 else np.array(history["timestamps"][cut:]),
                         actions={k: v[cut:] for k, v in history["actions"].items()}, user_id=user["user_id"],
                         context=user["context"], k=7 + cut) for cut in (0, 2, 5)]
        together = recommender.recommend(queries)
        retrieved, retrieval_scores = recommender._retrieve(queries)
        for index, query in enumerate(queries):
            alone_ids, alone_scores = recommender._retrieve([query])
            np.testing.assert_array_equal(retrieved[index], alone_ids[0])
            np.testing.assert_allclose(retrieval_scores[index], alone_scores[0], atol=1e-5)
        for query, answer in zip(queries, together):
            alone = recommender.recommend([query])[0]
            assert answer.items == alone.items and len(answer.items) == query.k
            np.testing.assert_allclose(answer.scores, alone.scores, atol=1e-5)


def test_unknown_ids_follow_the_documented_rule_and_are_counted(bundles: dict[str, Path], user: dict) -> None:
    known = [int(i) for i in load_bundle(bundles["hstu"]).retrieval.item_raw_ids[:4]]
    unknown = [10**12, 10**12 + 1]
    with _client(bundles["hstu"]) as client:
        counter = client.app.state.served.metrics.unknown
        history = {"items": [*user["history"]["items"][:-1], unknown[0]]}
        assert client.post("/v1/recommend", json={"history": history, "k": 3}).status_code == 200
        assert counter.labels("history")._value.get() == 1  # kept, read as the default row
        dropped = counter.labels("candidates")._value.get()  # retrieved items the ranker never saw
        answer = client.post("/v1/recommend", json={"history": {"items": known[:1]}, "candidates": known + unknown,
                                                    "k": 10, "exclude_seen": False}).json()
        assert sorted(answer["items"]) == sorted(known)  # unknown candidates dropped, known ones all ranked
        assert counter.labels("candidates")._value.get() == dropped + 2
        assert 'terarec_unknown_ids_total{field="history"} 1.0' in client.get("/metrics").text


def test_score_requests_batched_together_answer_as_alone(bundles: dict[str, Path], serve_runs: dict[str, Path]) -> None:
    import pyarrow as pa

    table = pq.read_table(sorted(serve_runs["data"].glob("part-*.parquet"))[0]).slice(0, 30)
    rows = [{k: v for k, v in row.items() if k in ("user_id", "item_id", "category", "hour", "device", "age_bucket",
                                                   "gender", "price")} for row in table.to_pylist()]
    app = create_app(ServerSettings(bundle=bundles["ctr"], threads=1, max_batch=8, max_wait_ms=50))
    offline = Predictor.from_run(serve_runs["ctr"], threads=1)

    async def together() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app, client=LOOPBACK)
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                bodies = [{"rows": rows[i:i + 10]} for i in range(0, 30, 10)] + [{"rows": [{"item_id": 1}]}]
                return await asyncio.gather(*[client.post("/v1/score", json=body) for body in bodies])

    responses = asyncio.run(together())
    assert [r.status_code for r in responses] == [200, 200, 200, 422]  # the bad one fails alone
    for index, response in enumerate(responses[:3]):
        expected = offline.score(pa.Table.from_pylist(rows[index * 10:index * 10 + 10]))["click"]
        np.testing.assert_allclose(response.json()["scores"]["click"], expected, atol=1e-6)


def test_a_delta_from_a_later_checkpoint_is_applied_without_restart(serve_runs: dict[str, Path], user: dict,
                                                                    tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from terarec.serve.delta import make_delta
    from terarec.train.checkpoint import load_checkpoint, save_checkpoint

    run = tmp_path / "run"
    shutil.copytree(serve_runs["retrieval"], run)
    base = export_bundle([run], tmp_path / "base", threads=1)
    body = {"history": {"items": user["history"]["items"][-4:]}, "k": 10}
    with _client(base) as client:
        before = client.post("/v1/recommend", json=body).json()
    # a later checkpoint: the rows of the three best items turn around (training moved them)
    raw_ids = load_bundle(base).retrieval.item_raw_ids.tolist()
    moved = sorted(raw_ids.index(item) + 1 for item in before["items"][:3])
    payload = load_checkpoint(run / "checkpoint.pt")
    table = next(name for name in payload["model"] if name.endswith("weight") and "item" in name)
    payload["model"][table][moved] *= -1
    save_checkpoint(run / "checkpoint.pt", payload)
    delta = make_delta(base, run, tmp_path / "delta-1")
    assert load_file(delta / "retrieval.safetensors")[f"{table}::rows"].tolist() == moved
    with _client(export_bundle([run], tmp_path / "after", threads=1)) as client:  # a full re-export
        expected = client.post("/v1/recommend", json=body).json()
    with _client(base) as client:
        applied = client.post("/admin/delta", json={"path": str(delta)})
        assert applied.status_code == 200, applied.text
        served = client.post("/v1/recommend", json=body).json()
        again = client.post("/admin/delta", json={"path": str(delta)})  # made for the version before it
        assert again.status_code == 409 and "applies to bundle version" in again.json()["reason"]
        assert client.post("/v1/recommend", json=body).json()["items"] == served["items"]  # still serving
    assert served["items"] == expected["items"] != before["items"]
    assert not set(before["items"][:3]) & set(served["items"])
    np.testing.assert_allclose(served["scores"], expected["scores"], atol=1e-5)


def test_delta_command_refuses_a_run_of_another_shape(serve_runs: dict[str, Path], bundles: dict[str, Path],
                                                      tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from terarec.cli import app

    same = CliRunner().invoke(app, ["delta", str(bundles["hstu"]), str(serve_runs["ranking"]), "--out",
                                    str(tmp_path / "d")])
    assert same.exit_code == 0 and "wrote delta" in same.output  # nothing changed: an empty delta
    other = CliRunner().invoke(app, ["delta", str(bundles["hstu"]), str(serve_runs["ctr"]), "--out",
                                     str(tmp_path / "e")])
    assert other.exit_code != 0 and "does not match" in other.output


def test_compute_threads_leave_one_cpu_to_the_event_loop(monkeypatch) -> None:
    import terarec.runtime
    from terarec.serve.server import compute_threads

    assert compute_threads(3) == 3
    for quota, expected in ((1, 1), (2, 1), (8, 7)):
        monkeypatch.setattr(terarec.runtime, "cpu_quota", lambda quota=quota: quota)
        assert compute_threads(0) == expected


def test_two_lanes_answer_two_batches_at_once(bundles: dict[str, Path], user: dict) -> None:
    """With two lanes two batches are answered at the same time (each waits at a barrier that only
    both together pass; one lane would time out there and answer 500), as one lane answers them."""
    app = create_app(ServerSettings(bundle=bundles["hstu"], threads=1, max_batch=1, lanes=2))
    served = app.state.served
    barrier, answer = threading.Barrier(2, timeout=60), served.answer
    served.answer = lambda jobs: (barrier.wait(), answer(jobs))[1]

    async def two_requests() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app, client=LOOPBACK)
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                return await asyncio.gather(*[client.post("/v1/recommend", json=user) for _ in range(2)])

    responses = asyncio.run(two_requests())
    assert [response.status_code for response in responses] == [200, 200], responses[0].text
    with _client(bundles["hstu"]) as client:
        alone = client.post("/v1/recommend", json=user).json()
    for response in responses:
        assert response.json()["items"] == alone["items"]
        np.testing.assert_allclose(response.json()["scores"], alone["scores"], atol=1e-5, rtol=0)
