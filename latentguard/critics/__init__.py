"""Latent critics: the network over the policy's hidden states and the safety state
(:class:`~latentguard.critics.critic.LatentCritic`), base-model rollouts to learn from
(:func:`~latentguard.critics.rollouts.collect_rollouts`, ``train.py collect``) and training
(:func:`~latentguard.critics.training.train_critic`, ``train.py critic``)."""

from latentguard.critics.critic import CriticConfig, LatentCritic
from latentguard.critics.rollouts import RolloutConfig, collect_rollouts
from latentguard.critics.training import CriticTrainConfig, train_critic

__all__ = ["CriticConfig", "CriticTrainConfig", "LatentCritic", "RolloutConfig", "collect_rollouts", "train_critic"]
