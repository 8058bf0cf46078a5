"""Text prompts: sentence embeddings for conditioning (Hallo2 textual prompts)."""
