"""The untrained language model as a reference verifier: its own token log-probabilities, no training.

A reward model built on a backbone can only learn what the backbone's states carry. How likely the
backbone finds each completion token is the cheapest reading of them: a completion's mean token
log-probability stands in for its reward, and the per-token log-probability for its Q-values, so the
same metrics (pair accuracy, prefix AUROC, error localization) say how much a trained reward model
adds over the language model it started from. Run over the same cached trunk states as the reward
models: the decoder layers from `cut` up, the final norm and the LM head, as pretrained.
"""

import torch
from transformers import AutoModelForCausalLM

from goalrm.backbones import resolve
from goalrm.localization import localization
from goalrm.metrics import auroc, pairwise_accuracy
from goalrm.qvalues import prefix_mean_q
from goalrm.tiny import TINY_NAME, tiny_config


def load_lm(name_or_path: str):
    """The backbone with its LM head, as pretrained (`tiny`: random, for tests)."""
    if name_or_path == TINY_NAME:
        return AutoModelForCausalLM.from_config(tiny_config(), dtype=torch.float32).eval()
    return AutoModelForCausalLM.from_pretrained(resolve(name_or_path), dtype=torch.float32).eval()


def top_lm(lm, cut: int):
    """`lm` from decoder layer `cut` up (in place), to be fed with trunk states."""
    lm.model.layers = torch.nn.ModuleList(list(lm.model.layers)[cut:])
    lm.config.use_cache = False  # the kept layers keep their original cache indices
    return lm


@torch.no_grad()
def token_logprobs(lm, features, task, idx, batch: int = 8) -> list[torch.Tensor]:
    """Per sequence of `idx`: log p(token | everything before it) for each completion token.
    `features(idx)` gives (trunk states, mask, completion start, end), as bench/quality.py's does."""
    out = []
    for b in range(0, len(idx), batch):
        emb, mask, start, end = features(idx[b : b + batch])
        logp = torch.log_softmax(lm(inputs_embeds=emb, attention_mask=mask).logits.float(), dim=-1)
        for j in range(len(start)):
            s, e = int(start[j]), int(end[j])
            targets = task.seqs[idx[b + j]].ids[s:e]
            # the logits at position t predict token t + 1; a prompt is never empty, so s >= 1
            out.append(logp[j, s - 1 : e - 1].gather(-1, torch.tensor(targets, device=logp.device).unsqueeze(-1)).squeeze(-1).cpu())
    return out


def prefix_mean(trace: torch.Tensor, fraction: float) -> float:
    """Mean over the leading `fraction` of a completion, read as goalrm reads Q (prefix_mean_q)."""
    n = torch.tensor([len(trace)])
    return float(prefix_mean_q(trace.unsqueeze(0), torch.zeros_like(n), n, fraction)[0])


def lm_metrics(traces: dict, task, eval_pairs, eval_seqs, fractions) -> dict:
    """The reward models' held-out metrics with mean token log-probability as the reward and the
    per-token log-probability as Q. `traces` maps a sequence index to its completion's trace."""
    score = {i: float(traces[i].mean()) for i in eval_seqs}
    labels = torch.tensor([task.seqs[i].label for i in eval_seqs], dtype=torch.long)
    m = {
        "pairwise_accuracy": pairwise_accuracy(torch.tensor([score[c] for c, _ in eval_pairs]),
                                               torch.tensor([score[r] for _, r in eval_pairs])),
        "auroc": auroc(torch.tensor([score[i] for i in eval_seqs]), labels),
        "prefix_auroc_q": {str(f): auroc(torch.tensor([prefix_mean(traces[i], f) for i in eval_seqs]), labels) for f in fractions},
    }
    if all(task.seqs[r].error is not None for _, r in eval_pairs):
        m["localization"] = localization([traces[c].tolist() for c, _ in eval_pairs], [traces[r].tolist() for _, r in eval_pairs],
                                         [task.seqs[r].error for _, r in eval_pairs])
    return m
