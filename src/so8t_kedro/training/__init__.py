"""The SO8T training loop's parts: checkpoint manager, progress logger, base model."""
