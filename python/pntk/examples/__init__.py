"""Built-in example model directories (config files only, no weights)."""
from pathlib import Path

_ROOT = Path(__file__).resolve().parent
EXAMPLES = {"airophin": "airophin-13b-pntk-16k"}


def example_path(name: str) -> Path:
    """Directory of a built-in example, by short name ("airophin") or directory name."""
    directory = EXAMPLES.get(name, name)
    path = _ROOT / directory
    if not (path / "config.json").is_file():
        known = ", ".join(sorted(EXAMPLES))
        raise KeyError(f"no built-in example {name!r} (known: {known})")
    return path
