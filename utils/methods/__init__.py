"""The distillation methods: one-to-one mapping (``one_to_one``), KD, ProKT and LGTM
(``lgtm``), the teacher option and loader every method uses (``teacher``) and the frozen
teacher's cached outputs (``teacher_cache``). Built on ``utils.engine``, ``utils.tasks`` and
``losses``."""
