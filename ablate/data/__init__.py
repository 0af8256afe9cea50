"""Preference data: sources (``sources``: files, Hugging Face data sets), pairs to token ids and
batches (``tokens``), one row per pair (``shared_prompt``) and the built-in task (``synthetic``)."""
