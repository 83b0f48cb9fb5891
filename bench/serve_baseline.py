"""The baseline of bench/serve_load.py: a reward server in OpenRLHF serve_rm's style. One process
(FastAPI on uvicorn), one padded forward per request over that request's texts, nothing batched
across requests: a request waits for the forwards of those before it.

    python bench/serve_baseline.py --model DIR --port 8001 [--threads 2]
"""

import argparse

import torch
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from transformers import AutoModelForSequenceClassification, AutoTokenizer


def make_app(model_dir: str, max_length: int) -> FastAPI:
    # the export's linear head loads as plain HF sequence classification: no goalrm code, no Q-values
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, use_safetensors=True).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.padding_side = "left"  # as OpenRLHF's get_tokenizer(..., "left")
    app = FastAPI()

    @app.post("/get_reward")
    async def get_reward(request: Request):
        queries = (await request.json())["query"]
        enc = tok(queries, return_tensors="pt", padding=True, truncation=True, max_length=max_length)
        with torch.no_grad():  # blocks the event loop, as serve_rm's handler does
            rewards = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits[:, 0].tolist()
        return JSONResponse({"rewards": rewards, "scores": rewards})

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    return app


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--port", type=int, default=8001)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-length", type=int, default=1024)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    # keep-alive as Ray Serve's proxy has it (90 s); uvicorn's 5 s default drops pooled connections
    # whose next request waited behind other forwards on the blocked event loop
    uvicorn.run(make_app(args.model, args.max_length), host="127.0.0.1", port=args.port, log_level="warning", timeout_keep_alive=90)


if __name__ == "__main__":
    main()
