"""Offline training: read MNIST, train a preset, publish a version into the model store."""
