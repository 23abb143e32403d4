"""Which teacher layer each student layer starts from and is aligned with.

A layer map is a list with one entry per student layer: the 0-based index of the teacher layer that the student
layer is initialised from and whose output it is compared with in hidden-state and attention losses. In the
`hidden_states` tuples transformers returns, index 0 holds the embeddings, so student `hidden_states[i + 1]` pairs
with teacher `hidden_states[layer_map[i] + 1]`.

```python
>>> from hf_compact.layer_map import default_layer_map
>>> default_layer_map(6, 3)
[1, 3, 5]
>>> default_layer_map(12, 6, strategy="alternate")
[0, 2, 4, 6, 8, 10]
```
"""

from __future__ import annotations


STRATEGIES = ("uniform", "alternate")


def default_layer_map(num_teacher_layers: int, num_student_layers: int, strategy: str = "uniform") -> list[int]:
    """A layer map chosen from the two depths.

    - `"uniform"`: student layer `i` takes teacher layer `(i + 1) * T // S - 1`, spreading the student over the
      teacher and ending at its last layer (the one next to the task head).
    - `"alternate"`: `i * T // S`, DistilBERT's "one layer out of two" starting from the first layer.
    """
    for name, value in (("num_teacher_layers", num_teacher_layers), ("num_student_layers", num_student_layers)):
        if not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name}={value!r} is invalid: it must be a positive integer.")
    if num_student_layers > num_teacher_layers:
        raise ValueError(
            f"num_student_layers={num_student_layers} exceeds num_teacher_layers={num_teacher_layers}: a student "
            "layer map picks distinct teacher layers. Give the student at most as many layers as the teacher."
        )
    if strategy == "uniform":
        return [(i + 1) * num_teacher_layers // num_student_layers - 1 for i in range(num_student_layers)]
    if strategy == "alternate":
        return [i * num_teacher_layers // num_student_layers for i in range(num_student_layers)]
    raise ValueError(f"strategy={strategy!r} is unknown; use one of {STRATEGIES}.")


def parse_layer_map(text: str, num_teacher_layers: int, num_student_layers: int) -> list[int]:
    """A layer map from a command-line string such as `"1,3,5"`, checked against both depths."""
    try:
        layers = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise ValueError(f"layer map {text!r} is not a comma-separated list of integers, e.g. '1,3,5'.") from error
    if len(layers) != num_student_layers:
        raise ValueError(
            f"layer map {text!r} has {len(layers)} entries but the student has {num_student_layers} layers: give "
            "one teacher layer per student layer."
        )
    bad = [i for i in layers if not 0 <= i < num_teacher_layers]
    if bad:
        raise ValueError(
            f"layer map {text!r} names layers {bad} outside the teacher's {num_teacher_layers} layers "
            f"(valid: 0..{num_teacher_layers - 1})."
        )
    return layers


__all__ = ["STRATEGIES", "default_layer_map", "parse_layer_map"]
