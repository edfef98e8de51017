"""Stand-in for modules/shared.py: parsed arguments, settings and per-model user settings."""
import argparse

parser = argparse.ArgumentParser()
parser.add_argument("--model-dir", dest="model_dir", default="models")
parser.add_argument("--max_seq_len", type=int, default=2048)
parser.add_argument("--alpha_value", type=float, default=1)
parser.add_argument("--rope_freq_base", type=int, default=0)
parser.add_argument("--compress_pos_emb", type=int, default=1)
args, _ = parser.parse_known_args([])

settings = {"truncation_length": 2048, "truncation_length_max": 16384}
user_config = {}
gradio = {}
model = None
