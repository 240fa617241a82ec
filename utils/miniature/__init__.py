"""Made-up and miniature models and data: synthetic GLUE, SQuAD and IMDB files in their
original formats (``synthetic_glue``, ``synthetic_squad``, ``synthetic_imdb``: the tests, the
demo, the GPU check), tiny random BERT and DistilBERT models (``tiny_models``), and the
miniature tables' pretrained models and subsampled training sets (``mini_models``,
``mini_data``). Built on ``utils.engine`` and ``utils.tasks``."""
