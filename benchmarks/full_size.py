"""Full-size architectures with random weights, shared by the benchmarks' ``--full`` runs.

Random weights have the real models' compute and memory, so throughput measured with them is
what the released checkpoints would give, without downloading them.
"""

from __future__ import annotations


def paligemma_3b_448_config(image_token_id: int, eos_token_id=None, pad_token_id=None):
    """The PaliGemma-3B (448 px) architecture behind ColPali v1.x and PaliGemma mix models."""
    from transformers import GemmaConfig, PaliGemmaConfig, SiglipVisionConfig

    return PaliGemmaConfig(
        vision_config=SiglipVisionConfig(
            hidden_size=1152,
            intermediate_size=4304,
            num_hidden_layers=27,
            num_attention_heads=16,
            image_size=448,
            patch_size=14,
            projection_dim=2048,
        ),
        text_config=GemmaConfig(
            vocab_size=257216,
            hidden_size=2048,
            intermediate_size=16384,
            num_hidden_layers=18,
            num_attention_heads=8,
            num_key_value_heads=1,
            head_dim=256,
            max_position_embeddings=8192,
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
        ),
        image_token_id=image_token_id,
        projection_dim=2048,
        hidden_size=2048,
    )
