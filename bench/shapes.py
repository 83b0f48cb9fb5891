"""Model shapes the benchmarks share: overrides of the tiny preset's LlamaConfig."""

SHAPES = {
    "tiny": {},
    # SmolLM2-135M's shape, randomly initialised
    "smollm2-shape": dict(
        hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
        num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True,
    ),
}
