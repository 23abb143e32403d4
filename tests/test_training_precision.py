import torch
from transformers import AutoConfig, AutoModelForSequenceClassification

import hf_compact  # noqa: F401
from hf_compact.training_precision import choose_precision, fastest_training_precision


def test_bf16_is_chosen_only_when_it_is_measurably_faster():
    assert choose_precision({"no": 0.10, "bf16": 0.05}) == "bf16"
    assert choose_precision({"no": 0.10, "bf16": 0.17}) == "no"  # bf16 slower (CPUs without native bf16 math)
    assert choose_precision({"no": 0.10, "bf16": 0.095}) == "no"  # within the margin: not worth it


def test_measurement_runs_both_precisions_and_leaves_the_model_alone():
    config = AutoConfig.for_model("compact_distilbert", vocab_size=50, dim=16, n_layers=1, n_heads=2, hidden_dim=32)
    model = AutoModelForSequenceClassification.from_config(config)
    before = {name: value.clone() for name, value in model.state_dict().items()}
    batch = {"input_ids": torch.randint(0, 50, (4, 8)), "labels": torch.tensor([0, 1, 0, 1])}
    choice, seconds = fastest_training_precision(model, batch, steps=2)
    assert choice in ("no", "bf16") and set(seconds) == {"no", "bf16"}
    assert all(value > 0 for value in seconds.values())
    assert choice == choose_precision(seconds)
    assert all(torch.equal(before[name], value) for name, value in model.state_dict().items())
