"""Model definitions of hf_compact, one configuration and one modeling file per model type.

These files are self-contained (they import only transformers, torch and each other, relatively), because
they are copied next to every saved checkpoint so that it loads with ``trust_remote_code=True`` where
hf_compact is not installed.
"""
