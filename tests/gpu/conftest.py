"""The GPU tier's own fixtures, so that it runs without the project's whole conftest.

Why: a GPU machine lent for a few minutes has torch, transformers and pytest but not the test
suite's servers and clients (no botocore, moto or freezegun), and ``tests/conftest.py`` loads
fixture modules that import them. ``python -m bench.gpu_check`` runs this tier with
``--confcutdir tests/gpu``, which makes pytest load this file and no conftest above it; the
fixtures the GPU tests use are imported here from the modules that define them (pytest registers
a fixture function imported into a conftest as if it were defined there). In the whole suite,
where ``tests/conftest.py`` registers the same modules, these imports change nothing for the
tests outside this folder.
"""

from tests.support.tiny_sd import tiny_family_path, tiny_sd_path

__all__ = ["tiny_family_path", "tiny_sd_path"]
