"""Text models that read answers, not latents: MiniLM sentence embeddings
(:mod:`~latentguard.text.embeddings`) and refusal phrases (:mod:`~latentguard.text.refusals`)."""
