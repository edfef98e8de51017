"""Stand-in for modules/ui_model_menu.py: the load button's message generator and the UI builder."""
import types

from modules import shared
from modules.models import load_model


def create_ui():
    shared.gradio["max_seq_len"] = types.SimpleNamespace(maximum=16384)


def load_model_wrapper(selected_model, loader):
    yield f"Loading `{selected_model}`..."
    shared.model = load_model(selected_model, loader)
    yield f"Successfully loaded `{selected_model}`."
