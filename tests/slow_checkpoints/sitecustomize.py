"""Makes every checkpoint of a Python process that has this folder on its path (``PYTHONPATH``)
wait before its manifest is written, with its other files on disk: ``tests/test_faults.py`` kills
a run there, in the middle of writing its first checkpoint, and holds a run alive to test the
output folder's lock."""

import time

import utils.engine.checkpoints as checkpoints

_write_manifest = checkpoints.write_manifest


def _slow_write_manifest(folder):
    time.sleep(120)
    _write_manifest(folder)


checkpoints.write_manifest = _slow_write_manifest
