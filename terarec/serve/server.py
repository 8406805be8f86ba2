"""The HTTP server of a bundle: FastAPI endpoints, a bounded queue with dynamic batching, metrics, hot reload.

Endpoints (request and answer fields in docs/serving.md):

* ``POST /v1/recommend`` ``{history: {items, timestamps?, actions?}, k, exclude_seen?, candidates?, user_id?,
  context?, request_time?}``: two-stage recommendation (``Recommender``);
* ``POST /v1/score`` ``{rows: [{column: value}]}``: the ranking part's per-output scores;
* ``GET /healthz`` (the process answers), ``GET /readyz`` (a bundle is loaded), ``GET /metrics``
  (Prometheus text);
* ``POST /admin/reload`` ``{path?}`` (loopback clients only) and SIGHUP: load, self-check and swap a
  bundle; one that fails is refused and the old one keeps serving;
* ``POST /admin/delta`` ``{path}`` (loopback only): apply an embedding delta (``terarec.serve.delta``)
  to a copy of the served bundle, self-check and swap it in the same way.

Requests wait in a queue of ``queue_size`` jobs; one worker takes up to ``max_batch`` of them (until
none has come for ``max_wait_ms``, and at most ``HOLD_WAITS`` x ``max_wait_ms`` after the first) and
answers them together on a compute thread; ``lanes`` compute threads answer that many batches at
once (default 1).
A full queue answers 503 with Retry-After at once, so memory stays bounded under any load. Malformed
requests answer 4xx naming the field; an error inside the model answers 500 with the request id,
and the server stays up.

Example:
    >>> app = create_app(ServerSettings(bundle="bundles/demo"))  # doctest: +SKIP
    >>> uvicorn.run(app, host="127.0.0.1", port=8000)  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import signal
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Union

import numpy as np
import pyarrow as pa
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, model_validator

from terarec.serve.bundle import load_bundle
from terarec.serve.delta import apply_delta
from terarec.serve.recommender import Answer, Query, QueryError, Recommender

log = logging.getLogger("terarec.serve")

Scalar = Union[StrictInt, StrictFloat, StrictStr, StrictBool, None]


@dataclass
class ServerSettings:
    """How a server runs.

    Args:
        bundle: the bundle folder to serve.
        max_batch: queries answered together (1: no batching).
        max_wait_ms: a batch closes once no query has come for this long (or when full).
        queue_size: queries waiting at most; beyond, 503 with Retry-After.
        max_k: the largest ``k`` a request may ask for.
        max_candidates: the most candidates a request may give.
        max_rows: the most rows a score request may give.
        max_body_bytes: larger request bodies answer 413.
        num_candidates: items retrieved for ranking.
        threads: torch and faiss threads of a compute thread (0: ``compute_threads``, the
            CPUs this process may use less the event loop's one, shared by the lanes, at least 1).
        lanes: compute threads, each answering one batch at a time (a batch forms while the
            lanes are busy, as with one); torch ops release the GIL, so lanes run in parallel.
    """

    bundle: str | Path
    max_batch: int = 32
    max_wait_ms: float = 2.0
    queue_size: int = 256
    max_k: int = 1000
    max_candidates: int = 2048
    max_rows: int = 4096
    max_body_bytes: int = 4 << 20
    num_candidates: int = 256
    threads: int = 0
    lanes: int = 1


# ---- request bodies


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class History(Strict):
    items: list[StrictInt] = Field(min_length=1, description="raw item ids, oldest first")
    timestamps: list[StrictInt] | None = None
    actions: dict[str, list[Union[StrictFloat, StrictInt]]] | None = None

    @model_validator(mode="after")
    def _aligned(self) -> "History":
        if self.timestamps is not None and len(self.timestamps) != len(self.items):
            raise ValueError(f"timestamps: {len(self.timestamps)} values for {len(self.items)} items")
        for name, values in (self.actions or {}).items():
            if len(values) != len(self.items):
                raise ValueError(f"actions.{name}: {len(values)} values for {len(self.items)} items")
        return self


class RecommendRequest(Strict):
    history: History | None = None
    user_id: StrictInt | None = None
    k: StrictInt = Field(10, ge=1)
    exclude_seen: StrictBool = True
    candidates: list[StrictInt] | None = None
    context: dict[str, Scalar] = Field(default_factory=dict)
    request_time: StrictInt | None = None


class ScoreRequest(Strict):
    rows: list[dict[str, Any]] = Field(min_length=1)


class ReloadRequest(Strict):
    path: str | None = None


def _invalid(field_path: list[str], message: str, status: int = 422) -> JSONResponse:
    """The shape of FastAPI's own validation errors, for the checks that depend on the bundle."""
    return JSONResponse({"detail": [{"loc": ["body", *field_path], "msg": message, "type": "value_error"}]},
                        status_code=status)


# ---- metrics


class Metrics:
    """The server's Prometheus metrics, in a registry of its own (several apps may share a process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("terarec_requests", "HTTP requests by endpoint and status",
                                ["endpoint", "status"], registry=self.registry)
        self.latency = Histogram("terarec_stage_seconds", "Seconds per stage (request: the whole request)",
                                 ["stage"], registry=self.registry,
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56))
        self.batch_size = Histogram("terarec_batch_size", "Queries per batch", registry=self.registry,
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128))
        self.queue_depth = Gauge("terarec_queue_depth", "Queries waiting", registry=self.registry)
        self.unknown = Counter("terarec_unknown_ids", "Ids the bundle does not know, by request field",
                               ["field"], registry=self.registry)
        self.bundle = Gauge("terarec_bundle_info", "The bundle served (value 1)", ["version", "path"],
                            registry=self.registry)
        self.reloads = Counter("terarec_reloads", "Bundle reloads by result", ["result"], registry=self.registry)


# ---- batching


# A batch is held at most this many max_wait_ms after its first query, however steadily queries come.
HOLD_WAITS = 5


class QueueFull(Exception):
    """The queue holds ``queue_size`` jobs: the request is turned away (503)."""


class Batcher:
    """A bounded queue and one worker answering jobs in batches on ``lanes`` compute threads.

    ``answer(jobs)`` receives the payloads of one batch and returns one result (or exception) each;
    with several lanes it is called from several threads at once.
    """

    def __init__(self, answer: Callable[[list[Any]], list[Any]], max_batch: int, max_wait_ms: float,
                 capacity: int, metrics: Metrics, threads: int, lanes: int = 1) -> None:
        self.answer, self.max_batch, self.max_wait = answer, max(1, max_batch), max_wait_ms / 1e3
        self.lanes = max(1, lanes)
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=capacity)
        self.metrics = metrics
        self.executor = ThreadPoolExecutor(self.lanes, thread_name_prefix="terarec-compute",
                                           initializer=_set_compute_threads, initargs=(threads, self.lanes))
        self.task: asyncio.Task | None = None
        self.answering: set[asyncio.Task] = set()

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        for task in [self.task, *self.answering]:
            if task is not None:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def submit(self, payload: Any) -> Any:
        future = asyncio.get_running_loop().create_future()
        try:
            self.queue.put_nowait((payload, future))
        except asyncio.QueueFull as error:
            raise QueueFull from error
        self.metrics.queue_depth.set(self.queue.qsize())
        return await future  # an answer, or the exception that answering this job raised

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        free_lanes = asyncio.Semaphore(self.lanes)
        while True:
            await free_lanes.acquire()  # a batch is taken when a lane can answer it at once
            jobs = [await self.queue.get()]
            opened = last = loop.time()
            while len(jobs) < self.max_batch:
                # The wait restarts at each arrival: clients answered together send their next
                # queries together, but spread over more than one max_wait on a busy box; a window
                # counted from the first query split them (8 clients: 39 of 63 batches held 2).
                remaining = min(last + self.max_wait, opened + HOLD_WAITS * self.max_wait) - loop.time()
                if remaining <= 0:
                    break
                try:
                    jobs.append(await asyncio.wait_for(self.queue.get(), remaining))
                except asyncio.TimeoutError:
                    break
                last = loop.time()
            self.metrics.queue_depth.set(self.queue.qsize())
            self.metrics.batch_size.observe(len(jobs))
            task = loop.create_task(self._answer(jobs, free_lanes))
            self.answering.add(task)
            task.add_done_callback(self.answering.discard)

    async def _answer(self, jobs: list[tuple[Any, asyncio.Future]], free_lanes: asyncio.Semaphore) -> None:
        try:
            results = await asyncio.get_running_loop().run_in_executor(
                self.executor, self.answer, [payload for payload, _ in jobs])
        except Exception as error:  # answer() isolates per-job errors; this is a bug in it
            results = [error] * len(jobs)
        finally:
            free_lanes.release()
        for (_, future), result in zip(jobs, results):
            if not future.done():
                future.set_result(result)


def compute_threads(threads: int, lanes: int = 1) -> int:
    """A compute thread's torch / faiss threads: ``threads``, or for 0 the CPUs this process may
    use less one, which the event loop (HTTP, JSON, validation) keeps, shared by the ``lanes``,
    at least 1. On the 2-core box of BENCHMARKS.md (issue 14) one thread answered (b) at 8
    clients with ~14% less server CPU per request and a lower p50 than two: a parallel region of
    many small ops wakes a thread that the event loop and the load generator also need."""
    from terarec.runtime import cpu_quota

    return threads if threads > 0 else max(1, (cpu_quota() - 1) // max(1, lanes))


def _set_compute_threads(threads: int, lanes: int) -> None:
    from terarec.train.setup import set_threads

    set_threads(compute_threads(threads, lanes))


# ---- the served state


class Served:
    """The recommender in service; ``swap`` replaces it atomically (a batch keeps the one it started with)."""

    def __init__(self, settings: ServerSettings, metrics: Metrics) -> None:
        self.settings, self.metrics = settings, metrics
        self.recommender: Recommender | None = None
        self.path: Path | None = None
        self.reload_lock = threading.Lock()
        self.last_reload_error: str | None = None

    def load(self, path: str | Path) -> Recommender:
        """Load, verify and self-check the bundle at ``path`` (raises on any failure)."""
        recommender = Recommender(load_bundle(path, threads=compute_threads(self.settings.threads, self.settings.lanes)),
                                  num_candidates=self.settings.num_candidates)
        recommender.self_check()
        return recommender

    def swap(self, path: str | Path) -> Recommender:
        """Serve the bundle at ``path`` once it loads and passes its self-check."""
        return self._install(lambda: self.load(path), Path(path))

    def apply_delta(self, delta: str | Path) -> Recommender:
        """Serve the current bundle with the embedding delta at ``delta`` applied (``terarec.serve.delta``)."""

        def updated() -> Recommender:
            recommender = Recommender(apply_delta(self.recommender.bundle, delta),
                                      num_candidates=self.settings.num_candidates)
            recommender.self_check()
            return recommender

        return self._install(updated, self.path)

    def _install(self, make: Callable[[], Recommender], path: Path | None) -> Recommender:
        with self.reload_lock:
            try:
                recommender = make()
            except Exception as error:
                self.last_reload_error = f"{type(error).__name__}: {error}"
                self.metrics.reloads.labels("refused").inc()
                raise
            self.recommender, self.path = recommender, path
            self.metrics.bundle.clear()
            self.metrics.bundle.labels(recommender.bundle.version, str(path)).set(1)
            self.metrics.reloads.labels("ok").inc()
            self.last_reload_error = None
            return recommender

    def answer(self, jobs: list[tuple[str, Any]]) -> list[Any]:
        """Answer a batch of ("recommend", Query) / ("score", pa.Table) jobs; errors stay per job."""
        recommender = self.recommender
        results: list[Any] = [None] * len(jobs)
        queries = [(i, payload) for i, (kind, payload) in enumerate(jobs) if kind == "recommend"]
        if queries:
            before = dict(recommender.unknown)
            try:
                for (i, _), answer in zip(queries, recommender.recommend([q for _, q in queries])):
                    results[i] = answer
            except Exception:  # one bad query must not fail the others: answer them one by one
                recommender.unknown.update(before)  # and count their unknown ids once
                for i, query in queries:
                    results[i] = _guarded(lambda q=query: recommender.recommend([q])[0])
            for name, count in recommender.unknown.items():
                if count > before.get(name, 0):
                    self.metrics.unknown.labels(name).inc(count - before.get(name, 0))
        groups: dict[pa.Schema, list[int]] = {}  # score jobs of the same columns are scored in one call
        for i, (kind, payload) in enumerate(jobs):
            if kind == "score":
                groups.setdefault(payload.schema, []).append(i)
        for members in groups.values():
            tables = [jobs[i][1] for i in members]
            scored = _guarded(lambda: recommender.score(pa.concat_tables(tables)))
            if isinstance(scored, Exception):  # answer each alone, so one bad job fails only itself
                for i in members:
                    results[i] = _guarded(lambda rows=jobs[i][1]: recommender.score(rows))
                continue
            bounds = np.cumsum([0, *[table.num_rows for table in tables]])
            for i, start, end in zip(members, bounds, bounds[1:]):
                results[i] = {name: values[start:end] for name, values in scored.items()}
        for answer in results:
            if isinstance(answer, Answer):
                for stage, ms in answer.stage_ms.items():
                    self.metrics.latency.labels(stage).observe(ms / 1e3)
                break
        return results


class Guard:
    """ASGI middleware of every request: its id (``x-request-id``, given or made; in
    ``request.state.request_id`` and the answer's headers), a 500 naming it when the app fails
    unanswered, the request count by endpoint and status, and ``/v1/`` latencies.

    Plain ASGI rather than Starlette's ``BaseHTTPMiddleware`` (``@app.middleware("http")``),
    which streams each answer through a task and a memory stream: BENCHMARKS.md (issue 14) has
    the event loop's CPU per request with each."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((value for name, value in scope["headers"] if name == b"x-request-id"), None)
        request_id = given.decode("latin-1") if given else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        started, status = time.perf_counter(), None

        async def send_with_id(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode("latin-1"))]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            if status is not None:  # answered already (the body limit signals its 413 so): pass it on
                raise
            log.exception("request %s failed", request_id)
            await JSONResponse({"error": "internal error", "request_id": request_id}, status_code=500)(
                scope, receive, send_with_id)
        finally:
            path = scope["path"]
            self.metrics.requests.labels(path, str(status)).inc()
            if path.startswith("/v1/"):
                self.metrics.latency.labels("request").observe(time.perf_counter() - started)


def _guarded(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except Exception as error:
        return error


def _is_loopback(host: str | None) -> bool:
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# ---- the app


def create_app(settings: ServerSettings) -> FastAPI:
    """The FastAPI app serving ``settings.bundle`` (loaded, verified and self-checked at start-up)."""
    metrics = Metrics()
    served = Served(settings, metrics)
    served.swap(settings.bundle)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher = Batcher(served.answer, settings.max_batch, settings.max_wait_ms, settings.queue_size, metrics,
                          settings.threads, settings.lanes)
        batcher.start()
        app.state.batcher = batcher
        loop = asyncio.get_running_loop()
        try:  # SIGHUP reloads the same path (a new bundle written there, e.g. by `terarec export --overwrite`)
            loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(_reload(served.path)))
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread (tests), or no SIGHUP
            pass
        yield
        await batcher.stop()

    async def _reload(path: Path | str | None, delta: bool = False) -> Recommender:
        loop = asyncio.get_running_loop()
        change = served.apply_delta if delta else served.swap
        try:  # on a thread of its own: serving goes on while the new bundle loads
            recommender = await loop.run_in_executor(None, change, path or served.path)
        except Exception as error:
            log.error("%s %s refused: %s", "delta" if delta else "reload of", path or served.path, error)
            raise
        log.info("serving bundle %s (version %s)", served.path, recommender.bundle.version)
        return recommender

    # FastAPI answers 413 to a body over the limit, whether announced by Content-Length or streamed.
    app = FastAPI(title="terarec", lifespan=lifespan, max_body_size=settings.max_body_bytes)
    app.state.served = served
    app.add_middleware(Guard, metrics=metrics)

    async def _submit(request: Request, job: tuple[str, Any]) -> Any:
        try:
            return await request.app.state.batcher.submit(job)
        except QueueFull:
            return JSONResponse({"error": "the server is at capacity: retry later"}, status_code=503,
                                headers={"Retry-After": "1"})

    def _failed(request: Request, error: Exception) -> JSONResponse:
        if isinstance(error, QueryError):
            return _invalid(error.field.split("."), error.message)
        request_id = request.state.request_id
        log.error("request %s: %s: %s", request_id, type(error).__name__, error, exc_info=error)
        return JSONResponse({"error": "internal error", "request_id": request_id}, status_code=500)

    @app.post("/v1/recommend")
    async def recommend(body: RecommendRequest, request: Request):
        recommender = served.recommender
        if body.history is None:
            return _invalid(["history"], "required: this bundle keeps no per-user histories, so user_id alone "
                                         "cannot be answered; send the user's history")
        if len(body.history.items) > recommender.max_history:
            return _invalid(["history", "items"], f"{len(body.history.items)} events; this bundle's models read "
                                                  f"at most {recommender.max_history}")
        if body.k > settings.max_k:
            return _invalid(["k"], f"at most {settings.max_k}, got {body.k}")
        if body.candidates is not None and not 1 <= len(body.candidates) <= settings.max_candidates:
            return _invalid(["candidates"], f"between 1 and {settings.max_candidates} items, got {len(body.candidates)}")
        history = body.history
        query = Query(items=np.asarray(history.items, np.int64),
                      timestamps=None if history.timestamps is None else np.asarray(history.timestamps, np.int64),
                      actions={name: [float(v) for v in values] for name, values in (history.actions or {}).items()},
                      k=body.k, exclude_seen=body.exclude_seen,
                      candidates=None if body.candidates is None else np.asarray(body.candidates, np.int64),
                      user_id=body.user_id, context=dict(body.context), request_time=body.request_time)
        answer = await _submit(request, ("recommend", query))
        if isinstance(answer, JSONResponse):
            return answer
        if isinstance(answer, Exception):
            return _failed(request, answer)
        # A JSONResponse as is: FastAPI would first walk a returned dict with jsonable_encoder.
        return JSONResponse({"items": answer.items, "scores": answer.scores, "task_scores": answer.task_scores,
                             "stage_ms": answer.stage_ms, "bundle": served.recommender.bundle.version})

    @app.post("/v1/score")
    async def score(body: ScoreRequest, request: Request):
        if len(body.rows) > settings.max_rows:
            return _invalid(["rows"], f"at most {settings.max_rows} rows, got {len(body.rows)}")
        try:
            rows = pa.Table.from_pylist(body.rows)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
            return _invalid(["rows"], f"rows do not form a table: {error}")
        answer = await _submit(request, ("score", rows))
        if isinstance(answer, JSONResponse):
            return answer
        if isinstance(answer, Exception):
            return _failed(request, answer)
        return {"scores": {name: values.tolist() for name, values in answer.items()},
                "bundle": served.recommender.bundle.version}

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz():
        recommender = served.recommender
        if recommender is None:
            return JSONResponse({"status": "no bundle"}, status_code=503)
        return {"status": "ready", "bundle": recommender.bundle.version, "path": str(served.path),
                "parts": {role: part.predictor.config.model["name"] for role, part in recommender.bundle.parts.items()},
                "last_reload_error": served.last_reload_error}

    @app.get("/metrics")
    async def prometheus():
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/admin/reload")
    async def reload(request: Request, body: ReloadRequest | None = None):
        if not _is_loopback(request.client.host if request.client else None):
            return JSONResponse({"error": "reload is accepted from loopback clients only"}, status_code=403)
        path = (body.path if body else None) or served.path
        try:
            recommender = await _reload(path)
        except Exception as error:
            return JSONResponse({"error": f"bundle {path} refused; still serving {served.path} "
                                          f"(version {served.recommender.bundle.version})",
                                 "reason": f"{type(error).__name__}: {error}"}, status_code=409)
        return {"status": "reloaded", "bundle": recommender.bundle.version, "path": str(path)}

    @app.post("/admin/delta")
    async def delta(request: Request, body: ReloadRequest):
        if not _is_loopback(request.client.host if request.client else None):
            return JSONResponse({"error": "deltas are accepted from loopback clients only"}, status_code=403)
        if not body.path:
            return _invalid(["path"], "required: the delta folder to apply")
        try:
            recommender = await _reload(body.path, delta=True)
        except Exception as error:
            return JSONResponse({"error": f"delta {body.path} refused; still serving version "
                                          f"{served.recommender.bundle.version}",
                                 "reason": f"{type(error).__name__}: {error}"}, status_code=409)
        return {"status": "applied", "bundle": recommender.bundle.version, "delta": body.path}

    return app


def serve(settings: ServerSettings, host: str = "127.0.0.1", port: int = 8000, workers: int = 1,
          log_level: str = "info") -> None:
    """Run the server with uvicorn (``workers`` processes each load the bundle)."""
    import uvicorn

    if workers > 1:
        os.environ[SETTINGS_ENV] = _settings_json(settings)
        uvicorn.run("terarec.serve.server:app_from_environment", factory=True, host=host, port=port,
                    workers=workers, log_level=log_level)
    else:
        uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level)


@contextmanager
def running_server(settings: ServerSettings, host: str = "127.0.0.1", port: int = 0,
                   start_seconds: float = 120.0) -> Iterator[str]:
    """The server on a thread of this process for the duration of a ``with`` block; yields its URL.

    ``port`` 0 picks a free one. The block's end stops the server (uvicorn's graceful exit)."""
    import socket

    import uvicorn

    if port == 0:
        with socket.socket() as probe:
            probe.bind((host, 0))
            port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="terarec-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_seconds
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"the server on {host}:{port} did not start")
        time.sleep(0.05)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


SETTINGS_ENV = "TERAREC_SERVE_SETTINGS"


def _settings_json(settings: ServerSettings) -> str:
    import dataclasses
    import json

    return json.dumps({key: str(value) if isinstance(value, Path) else value
                       for key, value in dataclasses.asdict(settings).items()})


def app_from_environment() -> FastAPI:
    """The app of a uvicorn worker process (``serve`` with several workers passes the settings by environment)."""
    import json

    return create_app(ServerSettings(**json.loads(os.environ[SETTINGS_ENV])))


__all__ = ["Batcher", "Metrics", "ServerSettings", "compute_threads", "create_app", "running_server", "serve"]
