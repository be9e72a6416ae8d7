"""What a fit leaves: the experiment folder, the scores, the K choice, the model file, predictions."""
