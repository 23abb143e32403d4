"""How close a grouped student starts to the dense one: block-diagonal weights against the least-squares fit.

    python benchmarks/grouped_init.py --teacher outputs/demo/minilm-l6-rotten-tomatoes

Builds, from a fine-tuned BERT-family classifier, the 3-layer `compact_squeezebert` with every projection dense
(the teacher's layers 1, 3, 5, i.e. the function a grouped student should approximate), the same student with 2
groups from the block-diagonal part of each matrix, and the same student after `hf_compact.fit_grouped_projections`
on 512 training reviews. Prints each one's validation accuracy, agreement with the teacher, and the cosine
similarity of its last hidden states to the dense student's, before any training.
"""

import argparse
import random
import sys
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import hf_compact
from hf_compact.conversion import SQUEEZEBERT_GROUP_FIELDS


sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes"))
from rotten_tomatoes import rotten_tomatoes_splits  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", required=True, help="A classifier fine-tuned on the Rotten Tomatoes reviews.")
    parser.add_argument("--groups", type=int, default=2)
    parser.add_argument("--samples", type=int, default=512)
    args = parser.parse_args()
    tokenizer = AutoTokenizer.from_pretrained(args.teacher)
    teacher = AutoModelForSequenceClassification.from_pretrained(args.teacher).eval()
    splits = rotten_tomatoes_splits()

    def batches(texts, size=64):
        for start in range(0, len(texts), size):
            yield dict(tokenizer(texts[start : start + size], padding=True, truncation=True, max_length=64,
                                 return_tensors="pt"))

    validation = splits["validation"]
    labels = torch.tensor(validation["label"])

    @torch.inference_mode()
    def outputs(model):
        predictions, hidden = [], []
        for batch in batches(validation["text"]):
            out = model(**batch, output_hidden_states=True)
            predictions.append(out.logits.argmax(-1))
            hidden.append(out.hidden_states[-1][batch["attention_mask"].bool()])
        return torch.cat(predictions), torch.cat(hidden)

    grouped = {f: args.groups for f in SQUEEZEBERT_GROUP_FIELDS if f != "post_attention_groups"}
    dense = hf_compact.convert_to_compact(teacher, "compact_squeezebert", num_hidden_layers=3,
                                          **{f: 1 for f in SQUEEZEBERT_GROUP_FIELDS})
    block = hf_compact.convert_to_compact(teacher, "compact_squeezebert", num_hidden_layers=3, **grouped)
    fitted = hf_compact.convert_to_compact(teacher, "compact_squeezebert", num_hidden_layers=3, **grouped)
    texts = random.Random(0).sample(splits["train"]["text"], args.samples)
    hf_compact.fit_grouped_projections(fitted, dense, list(batches(texts)))

    teacher_predictions, _ = outputs(teacher)
    dense_predictions, dense_hidden = outputs(dense)
    print(f"teacher: validation accuracy {(teacher_predictions == labels).float().mean():.4f}")
    for name, model in (("dense (3 teacher layers)", dense), ("grouped, block-diagonal", block),
                        ("grouped, fitted", fitted)):
        predictions, hidden = outputs(model)
        cosine = torch.nn.functional.cosine_similarity(hidden, dense_hidden, dim=-1).mean()
        print(f"{name:<26} accuracy {(predictions == labels).float().mean():.4f}  agreement "
              f"{(predictions == teacher_predictions).float().mean():.4f}  hidden-state cosine to dense {cosine:.3f}")


if __name__ == "__main__":
    main()
