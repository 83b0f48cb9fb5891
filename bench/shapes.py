"""Model shapes the benchmarks share: overrides of the tiny preset's LlamaConfig."""

SHAPES = {
    "tiny": {},
    # the tiny preset twice as deep and twice as wide (3.1M parameters as a reward model), for synthetic tasks the tiny one does not learn
    "tiny-4x256": dict(hidden_size=256, intermediate_size=640, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=8),
    # SmolLM2-135M's shape, randomly initialised
    "smollm2-shape": dict(
        hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
        num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True,
    ),
    # 820.6M parameters as a LlamaForSequenceClassification, the size of the GPU baseline in
    # ../shared/gpu-wheels/README.md (which does not record its shape): width 2048, 16 layers,
    # heads of 128 with grouped-query attention 2:1, Llama-2's vocabulary; positions for 1024 tokens
    "llama-820m": dict(
        hidden_size=2048, intermediate_size=5632, num_hidden_layers=16, num_attention_heads=16,
        num_key_value_heads=8, vocab_size=32000, max_position_embeddings=2048,
    ),
}
