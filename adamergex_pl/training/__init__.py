"""Training: fine-tuning a LoRA or (IA)³ adapter on a frozen, optionally 4-bit, causal LM."""
