"""Provider adapters: one module per fine-tuning provider behind one protocol (`base.py`)."""
