"""Who acts in the token environment: baselines, critic-guided search, CARE, SB3 policies."""
