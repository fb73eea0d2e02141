"""The built-in demo model zoo: small pretrained networks shipped with the package.

Each model module exposes its architecture, the path of its bundled weights and a loader
that returns the network in eval mode on the CPU, ready for a predictor to move and batch.
"""

#: Names of the built-in models (kept torch-free so the CLI can resolve them cheaply).
BUILTIN_MODEL_NAMES: tuple[str, ...] = ("landcover-demo", "ct-demo")
