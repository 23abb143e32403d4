"""The Jinja template of the model cards `hf_compact.model_card` writes (`template.md`), shipped as package data."""
