"""The tasks: GLUE (``glue_data`` readers and submission files, ``glue`` features and
evaluation, ``metrics``), SQuAD v1.1 (``squad_data``, ``squad``, ``squad_metrics``) and IMDB
(``imdb``). Built on ``utils.engine`` only."""
