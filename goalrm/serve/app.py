"""The Ray Serve application: HTTP routes around RewardService, and one `@serve.batch` queue that
batches the requests' sequences across requests by tokens (`batch_size_fn`).

`build_app` is the import path `serve run` / `serve deploy` call with a serve config's `args`."""

import asyncio
import logging
import os
from dataclasses import asdict, replace

import torch
import transformers
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve.config import AutoscalingConfig

from goalrm.config import ConfigError
from goalrm.serve.batching import Chunk, chunk_tokens
from goalrm.serve.config import ServeConfig, serve_config_from_dict
from goalrm.serve.model import check_model_dir
from goalrm.serve.schema import GET_REWARD, Q_VALUES, REWARD, RequestError
from goalrm.serve.service import RewardService, read_api_key

log = logging.getLogger("goalrm.serve")
api = FastAPI(title="goalrm serve", docs_url=None, redoc_url=None, openapi_url=None)
UNAUTHORIZED = {"error": "missing or wrong bearer token (Authorization: Bearer <key>)", "field": None, "index": None}


class _TokenBudgetWarning(logging.Filter):
    """Ray warns when max_batch_size exceeds max_ongoing_requests; here max_batch_size counts tokens
    (batch_size_fn), not requests, so the comparison does not apply."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("`max_batch_size`")


@serve.deployment(name="RewardModel", graceful_shutdown_wait_loop_s=0.5)  # Ray's 2 s would slow every stop
@serve.ingress(api)
class RewardServer:
    def __init__(self, config: dict):
        cfg = serve_config_from_dict(config)
        torch.set_num_threads(cfg.threads)
        transformers.utils.logging.disable_progress_bar()  # no "Loading weights" bar on the console
        self.service = RewardService(cfg)
        self.max_request_bytes = cfg.max_request_bytes
        self.score_batch.set_max_batch_size(cfg.max_batch_tokens)
        self.score_batch.set_batch_wait_timeout_s(cfg.batch_wait_timeout_s)
        self.counts = {"batches": 0, "chunks": 0, "sequences": 0}  # this replica's, shown by /info
        logging.getLogger("ray.serve").addFilter(_TokenBudgetWarning())

    @serve.batch(max_batch_size=ServeConfig.max_batch_tokens, batch_size_fn=chunk_tokens)
    async def score_batch(self, batch: list[Chunk]) -> list[tuple[list, list]]:
        """One forward schedule for every chunk in the batch, whichever request it came from."""
        seqs = [s for c in batch for s in c.seqs]
        for key, n in (("batches", 1), ("chunks", len(batch)), ("sequences", len(seqs))):
            self.counts[key] += n
        # in a thread, so the replica keeps reading and checking requests for the next batch
        rewards, qs = await asyncio.to_thread(self.service.score, seqs, any(c.q_values for c in batch))
        out, k = [], 0
        for c in batch:
            out.append((rewards[k : k + len(c.seqs)], qs[k : k + len(c.seqs)]))
            k += len(c.seqs)
        return out

    async def _handle(self, request: Request, endpoint: str) -> JSONResponse:
        if not self.service.authorized(request.headers.get("authorization")):
            return JSONResponse(UNAUTHORIZED, status_code=401, headers={"WWW-Authenticate": "Bearer"})
        try:
            length = request.headers.get("content-length", "")
            if length.isdigit() and int(length) > self.max_request_bytes:
                raise RequestError(413, f"the body has {length} bytes, over max_request_bytes={self.max_request_bytes}")
            prepared = self.service.prepare(endpoint, await request.body())
            parts = await asyncio.gather(*(self.score_batch(c) for c in self.service.chunks(prepared)))
            rewards = [r for p in parts for r in p[0]]
            qs = [q for p in parts for q in p[1]]
            return JSONResponse(self.service.answer(prepared, rewards, qs))
        except RequestError as e:
            return JSONResponse(e.body(), status_code=e.status)
        except Exception as e:  # the full traceback goes to the replica log, not to the client
            log.exception("/%s failed", endpoint)
            return JSONResponse({"error": f"internal error: {type(e).__name__}", "field": None, "index": None}, status_code=500)

    @api.post("/reward")
    async def reward(self, request: Request):
        return await self._handle(request, REWARD)

    @api.post("/get_reward")
    async def get_reward(self, request: Request):
        return await self._handle(request, GET_REWARD)

    @api.post("/q_values")
    async def q_values(self, request: Request):
        return await self._handle(request, Q_VALUES)

    @api.get("/health")
    async def health(self):
        return {"status": "ok"}

    @api.get("/info")
    async def info(self, request: Request):
        if not self.service.authorized(request.headers.get("authorization")):
            return JSONResponse(UNAUTHORIZED, status_code=401, headers={"WWW-Authenticate": "Bearer"})
        return {**self.service.info(), "replica_counts": self.counts}


def build_app(args: dict):
    """The application for a serve config's `args` (ServeConfig's keys), checked before any replica
    starts. Paths become absolute: replicas need not share the caller's working directory."""
    cfg = serve_config_from_dict(args)
    paths = {k: os.path.abspath(v) for k in ("model", "goal", "api_key_file") if (v := getattr(cfg, k))}
    cfg = replace(cfg, **paths)
    check_model_dir(cfg.model, cfg.goal)
    read_api_key(cfg.api_key_file)
    unknown = sorted(set(cfg.autoscaling_config or ()) - set(AutoscalingConfig.model_fields))
    if unknown:  # Ray ignores them
        raise ConfigError(f"serve config: autoscaling_config: unknown key(s) {', '.join(unknown)}")
    try:
        return RewardServer.options(**cfg.deployment_options()).bind(asdict(cfg))
    except (TypeError, ValueError) as e:  # Ray's own checks of autoscaling_config and ray_actor_options
        raise ConfigError(f"serve config: {e}") from None
