"""Shared fixtures: tiny models and synthetic GLUE data, made offline."""

import pytest
import torch

from utils.miniature.synthetic_glue import write_synthetic_task
from utils.miniature.tiny_models import make_tiny_bert, make_tiny_distilbert


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """Paths of tiny pre-trained-like models: BERT teachers for 1, 2 and 3 labels and students."""
    root = tmp_path_factory.mktemp("models")
    return {
        "bert": make_tiny_bert(root / "bert"),
        "distilbert": make_tiny_distilbert(root / "distilbert"),
        "distilbert_cased": make_tiny_distilbert(root / "distilbert_cased", cased=True),
        "distilbert_wide": make_tiny_distilbert(root / "distilbert_wide", hidden_size=48),
    }


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models step many times faster on one thread (two threads contend on a busy CPU); a
    module asks for it with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def glue_dir(tmp_path_factory):
    """A glue_data folder with every task in its original format."""
    root = tmp_path_factory.mktemp("glue_data")
    for task in ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"):
        write_synthetic_task(root, task)
    return root


def run_main(main, argv):
    """Run a script's ``main`` in this process; return its exit status (0 when it returns)."""
    try:
        main(argv)
    except SystemExit as stop:
        return stop.code
    return 0


def pytest_collection_modifyitems(items):
    """The modules with long end-to-end runs first (a stable sort, each module's tests kept together
    and in order, so that its fixtures are built once): with parallel workers the longest tests
    start at once instead of ending the run alone."""
    long_modules = {item.module for item in items if item.get_closest_marker("long") is not None}
    items.sort(key=lambda item: item.module not in long_modules)


def pytest_xdist_auto_num_workers(config):
    """``-n auto``: one worker per core, at most four (each imports torch and builds its own
    session fixtures; beyond four the suite's longest tests bound its time anyway)."""
    import os

    return max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))
