"""Distillation on two real processes (gloo on the CPU): two ran, their weights agree, and the result is the
single-process one with the same global batch; every head of both model types trains under plain DDP."""

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import torch
from safetensors.torch import load_file

from test_distill_recipe import RECIPE, common, run


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def accelerate_two_processes() -> list[str]:
    config_file = str(Path(RECIPE).parent / "accelerate_configs" / "cpu_2_processes.yaml")
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", config_file,
            "--main_process_port", str(free_port())]


def torchrun_two_processes() -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port())]


SAME_RUN = ["--student_layers", "2", "--num_train_epochs", "1", "--max_steps", "6", "--student_dropout", "0",
            "--learning_rate", "1e-3", "--latency_batches", "0", "--save_steps", "3"]


def no_dropout(tmp_path) -> list[str]:
    """Dropout draws differ between one batch of 2n and two of n: without any, the runs compute the same steps."""
    config = tmp_path / "no_head_dropout.json"
    config.write_text(json.dumps({"seq_classif_dropout": 0.0}))
    return ["--student_config", str(config)]


def test_two_processes_run_and_match_one_process_with_the_same_global_batch(trained_teacher, synthetic_csv,
                                                                            tmp_path):
    single = tmp_path / "single"
    run(common(trained_teacher, synthetic_csv, single, *SAME_RUN, *no_dropout(tmp_path),
               "--per_device_train_batch_size", "32"))
    double = tmp_path / "double"
    result = run(common(trained_teacher, synthetic_csv, double, *SAME_RUN, *no_dropout(tmp_path),
                        "--per_device_train_batch_size", "16"), launcher=accelerate_two_processes())

    distributed = json.loads((double / "results.json").read_text())["training"]["distributed"]
    assert distributed["num_processes"] == 2, result.stdout[-2000:]
    assert distributed["global_batch_size"] == 32 and distributed["per_device_batch_size"] == 16
    assert distributed["threads_per_process"] >= 1
    checksums = distributed["rank_weight_checksums"]
    assert len(checksums) == 2 and checksums[0] == checksums[1]  # the ranks end with identical weights
    single_results = json.loads((single / "results.json").read_text())
    assert single_results["training"]["distributed"]["num_processes"] == 1
    assert single_results["training"]["distributed"]["global_batch_size"] == 32
    assert (double / "checkpoints" / "checkpoint_1" / "progress.json").exists()  # the one of step 6

    # Same examples in every optimizer step, gradients averaged over the two halves of each batch: the two runs
    # differ only by float rounding (each half pads to its own longest text), which Adam's first steps amplify for
    # near-zero gradients up to a few learning rates.
    one, two = load_file(single / "model.safetensors"), load_file(double / "model.safetensors")
    assert one.keys() == two.keys()
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=0, atol=1e-4, msg=name)


def test_torchrun_forms_one_group_of_two_and_replaces_the_old_folder(trained_teacher, synthetic_csv, tmp_path):
    out = tmp_path / "torchrun"
    out.mkdir()
    (out / "old.txt").write_text("an earlier run")
    result = run(common(trained_teacher, synthetic_csv, out, "--student_layers", "1", "--max_steps", "2",
                        "--latency_batches", "0", "--report_to", "tensorboard", "--overwrite_output_dir"),
                 launcher=torchrun_two_processes())
    assert f"student saved to {out}" in result.stdout
    distributed = json.loads((out / "results.json").read_text())["training"]["distributed"]
    assert distributed["num_processes"] == 2 and len(set(distributed["rank_weight_checksums"])) == 1
    assert not (out / "old.txt").exists() and not (tmp_path / "torchrun.incoming").exists()
    assert list((out / "runs").rglob("*tfevents*"))  # the tracker ran and ended with the processes


EVERY_HEAD_UNDER_DDP = textwrap.dedent('''
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    from transformers import AutoConfig
    import hf_compact
    from hf_compact.registration import AUTO_CLASSES

    dist.init_process_group("gloo")
    configs = {
        "compact_distilbert": dict(vocab_size=99, dim=32, n_layers=2, n_heads=4, hidden_dim=37),
        "compact_squeezebert": dict(vocab_size=99, hidden_size=32, embedding_size=32, num_hidden_layers=2, num_attention_heads=4,
                                    intermediate_size=64, q_groups=2, k_groups=2, v_groups=2, post_attention_groups=1,
                                    intermediate_groups=2, output_groups=2),
    }
    torch.manual_seed(dist.get_rank())
    ids = torch.randint(5, 99, (2, 7))
    for model_type, fields in configs.items():
        for head, auto_class in AUTO_CLASSES.items():
            torch.manual_seed(0)
            model = auto_class.from_config(AutoConfig.for_model(model_type, **fields))
            ddp = DistributedDataParallel(model, find_unused_parameters=False)
            optimizer = torch.optim.SGD(ddp.parameters(), lr=0.1)
            for step in range(3):  # DDP reports unused parameters at the step after they went unused
                inputs = {"input_ids": ids.unsqueeze(1).expand(-1, 2, -1)} if head == "ForMultipleChoice" else {
                    "input_ids": ids}
                output = ddp(**inputs)
                loss = sum(v.float().pow(2).mean() for k, v in output.items() if k != "loss")
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()
            print(f"rank {dist.get_rank()}: {model_type} {head} trained", flush=True)
    dist.barrier()  # both ranks done before the group goes: gloo can abort a rank that tears down mid-exchange
    dist.destroy_process_group()
''')


def test_every_head_of_both_types_trains_under_ddp_without_unused_parameters(tmp_path):
    script = tmp_path / "every_head.py"
    script.write_text(EVERY_HEAD_UNDER_DDP)
    result = subprocess.run(torchrun_two_processes() + [str(script)], capture_output=True, text=True, timeout=600,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert result.stdout.count("trained") == 2 * 2 * 6  # two ranks, two model types, six heads
