"""What the throughput benchmarks share."""

# Recipe keys that make `medft.training.train` a bare training loop: no evaluation, no
# checkpoints, no test split, no logging integrations, no progress bars.
TRAINING_ONLY = {
    "eval_strategy": "no",
    "save_strategy": "no",
    "load_best_model_at_end": False,
    "train_metrics_samples": 0,
    "test_split": "",
    "report_to": "none",
    "disable_tqdm": True,
}
