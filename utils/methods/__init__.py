"""The distillation methods: one-to-one mapping (``one_to_one``), KD, ProKT and LGTM
(``lgtm``) and the frozen teacher's cached outputs (``teacher_cache``). Built on
``utils.engine``, ``utils.tasks`` and ``losses``."""
