"""The engine every script runs on: options (``cli``), the run's device, processes and output
folders (``runtime``), checkpoints (``checkpoints``), the one training loop and its batches
(``loop``), model and tokenizer loading (``models``), tokenised features and padding
(``features``) and the errors a user can cause (``errors``). It imports nothing else of the
project."""
