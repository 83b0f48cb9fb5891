"""The `tiny` preset: a small randomly initialised Llama and a byte-level tokenizer, built in code.

It needs no download, so the demo and the tests run anywhere.
"""

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import LlamaConfig, PreTrainedTokenizerFast

TINY_NAME = "tiny"
SPECIAL_TOKENS = ["<pad>", "<bos>", "<eos>"]


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """One token per byte; adds <bos> and <eos> itself, so plain `tokenizer(text)` matches goalrm."""
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", vocab["<bos>"]), ("<eos>", vocab["<eos>"])]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>")


def tiny_config(vocab_size: int = 259, **overrides) -> LlamaConfig:
    kwargs = dict(
        vocab_size=vocab_size,
        # small enough to learn the demo's arithmetic check in a few hundred CPU steps
        hidden_size=128,
        intermediate_size=320,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
    )
    kwargs.update(overrides)
    return LlamaConfig(**kwargs)
