#!/usr/bin/env bash
# Set up, train a model if the store has none, then serve on http://$MNIST_HOST:$MNIST_PORT.
# Extra arguments go to mnist-serve (e.g. --port 9000 --workers 2).
source "$(dirname "$0")/setup.sh"
if [ -z "$(python -m model_store versions)" ]; then
  echo "The model store is empty: training the ${MNIST_TRAIN_PRESET:-cnn} preset first."
  mnist-train --preset "${MNIST_TRAIN_PRESET:-cnn}"
fi
exec mnist-serve "$@"
