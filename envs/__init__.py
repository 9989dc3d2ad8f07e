"""The world: language-model backend, guards, rewards, the token-level CMDP and its wrappers."""
