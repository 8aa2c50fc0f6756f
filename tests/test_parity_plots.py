"""The computation count behind the accuracy-vs-computation plot (PonderNet Fig. 1c)."""

from engramlab.experiments.ponder.parity_plots import training_computation


def test_computation_sums_window_length_times_batch_times_steps_per_sample():
    rows = [
        {"step": 100, "train/loss": 0.7, "train/computed_steps": 4.0},
        {"step": 100, "eval/interpolation_accuracy": 0.5},  # evaluations add nothing
        {"step": 200, "train/loss": 0.6, "train/computed_steps": 2.5},
        {"step": 250, "train/loss": 0.6, "train/expected_steps": 8.0},  # a fixed-depth arm's only count
    ]
    # 100 updates x 10 samples x 4 steps, then 100 x 10 x 2.5, then 50 x 10 x 8
    assert training_computation(rows, batch_size=10) == [(100, 4000.0), (200, 6500.0), (250, 10500.0)]
