"""The README's demo command, on a smaller synthetic set."""

from utils.demo import run_demo


def test_demo_fine_tunes_a_teacher_and_distils_a_student(tmp_path):
    metrics = run_demo(tmp_path, num_train=128, num_dev=32, epochs=2)
    assert metrics["teacher"]["eval_samples"] == 32 and metrics["student"]["eval_samples"] == 32
    assert 0.0 <= metrics["student"]["accuracy"] <= 1.0
    assert (tmp_path / "student" / "model.safetensors").is_file()
