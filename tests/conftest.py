import os

import pytest
import torch

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def one_torch_thread():
    """Tiny models gain nothing from threads, and on a shared, busy CPU spinning threads cost far more."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def hf_model_dir(tmp_path_factory):
    """A real HF folder (random tiny Llama causal LM + byte tokenizer), loaded like a hub checkpoint."""
    from transformers import LlamaForCausalLM

    from goalrm.tiny import tiny_config, tiny_tokenizer

    path = tmp_path_factory.mktemp("hf_llama")
    LlamaForCausalLM(tiny_config(tie_word_embeddings=True)).save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def ray_session():
    """One local 2-CPU Ray for the whole test run: starting Ray costs seconds. A module that needs a Ray of
    its own (tests/test_two_nodes.py) shuts this one down; goalrm's entry points start a local Ray again
    when none is running."""
    import ray

    from goalrm.train.trainer import init_ray

    init_ray(num_cpus=2)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory):
    """An export of the tiny preset (seed 0) with a goal state, as `goalrm train` writes one."""
    from goalrm.export import save_reward_model
    from goalrm.model import build_model
    from goalrm.tiny import tiny_tokenizer

    torch.manual_seed(0)
    tok = tiny_tokenizer()
    path = str(tmp_path_factory.mktemp("tiny_export") / "model")
    save_reward_model(build_model("tiny", tokenizer=tok), tok, path, goal_state=torch.randn(128))
    return path
