"""Latent critics: networks over the policy's hidden states, rollout data, training."""
