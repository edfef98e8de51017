"""Config builders shared by the RoPE tests."""


def llama_config(head_dim=128, heads=8, max_positions=4096, **extra) -> dict:
    config = {
        "hidden_size": head_dim * heads,
        "num_attention_heads": heads,
        "head_dim": head_dim,
        "max_position_embeddings": max_positions,
    }
    config.update(extra)
    return config


def airophin_config(original=4096, extended=16384, **extra) -> dict:
    """The airophin convention: only a top-level original_max_position_embeddings marks the extension."""
    return llama_config(
        head_dim=128, heads=40, max_positions=extended, original_max_position_embeddings=original, **extra
    )
