"""Stand-in for modules/models_settings.py: per-model defaults."""
from modules import shared


def get_model_metadata(model):
    return {"loader": "Transformers", "truncation_length": shared.settings["truncation_length"]}
