"""finetune-service: one REST API over every LLM fine-tuning provider."""

__version__ = "0.1.0"
