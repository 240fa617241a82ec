"""Everything the scripts share, in four parts, from the ground up:

- ``utils.engine``: what every script runs on (options, the run's device and processes, output
  folders, checkpoints, the one training loop, model loading, padding, user errors);
- ``utils.tasks``: GLUE, SQuAD v1.1 and IMDB (readers, features, metrics, evaluation,
  submission files), built on the engine;
- ``utils.methods``: the distillation methods (one-to-one, KD/ProKT/LGTM, the teacher and its cache),
  built on the engine and the tasks;
- ``utils.miniature``: made-up and miniature models and data (synthetic tasks for the tests,
  the demo and the GPU check, tiny random models, the miniature tables' small pretrained
  models and subsamples), built on the engine and the tasks.

A part imports only from the parts below it; none imports a script or ``tests``.
"""
