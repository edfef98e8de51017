"""Runner integrations: Transformers (and, through patches and hooks, ExLlama and text-generation-webui)."""
