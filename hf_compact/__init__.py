"""hf_compact: compact, fast BERT-family students for the Hugging Face ecosystem."""

__version__ = "0.1.0"
