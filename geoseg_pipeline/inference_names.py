"""Names of the built-in models (torch-free, so the CLI can list them without loading torch)."""

BUILTIN_MODEL_NAMES: tuple[str, ...] = ("landcover-demo",)
