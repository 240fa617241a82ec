"""Makes the package ``datasets`` unimportable in every Python process that has this folder on
its path (``PYTHONPATH``), as on the GPU machine, which has no ``datasets``:
``tests/test_gpu_check.py`` runs the GPU check so, in its own process and in the ones it starts."""

import sys


class NoDatasets:
    """A meta-path finder, first in ``sys.meta_path``, that refuses ``datasets`` and its submodules."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if name == "datasets" or name.startswith("datasets."):
            raise ModuleNotFoundError(f"No module named {name!r} (made unimportable by the test)", name=name)
        return None


if NoDatasets not in sys.meta_path:
    sys.meta_path.insert(0, NoDatasets)
