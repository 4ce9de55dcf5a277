"""SO8T training: the loop, the checkpoint manager, the progress logger and the search."""
