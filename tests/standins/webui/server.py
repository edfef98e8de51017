"""Stand-in for server.py: settings for the model, the UI, then the model menu's load button."""
import sys

from modules import shared
from modules.models_settings import get_model_metadata
from modules import ui_model_menu

model_name, loader = sys.argv[1], sys.argv[2]
shared.args.model_dir = sys.argv[3]
print("settings:", sorted(get_model_metadata(model_name).items()))
print("truncation_length_max:", shared.settings["truncation_length_max"])
ui_model_menu.create_ui()
print("max_seq_len slider maximum:", shared.gradio["max_seq_len"].maximum)
for message in ui_model_menu.load_model_wrapper(model_name, loader):
    print("menu:", message.replace("\n", " | "))
print("rotary:", type(shared.model.model.rotary_emb).__name__)
