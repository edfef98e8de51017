"""Runner integrations: Transformers, ExLlama, ExLlamaV2 and text-generation-webui (runtime hooks and the code patches call)."""
