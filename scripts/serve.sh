#!/usr/bin/env bash
# Set up, then serve on http://$MNIST_HOST:$MNIST_PORT. With an empty store: a quick model first
# (about a minute), served at once, while the full model trains in the background and replaces it
# when published (the service follows the store's newest version). Extra arguments go to
# mnist-serve (e.g. --port 9000 --workers 2).
SETUP_EXTRAS=train
source "$(dirname "$0")/setup.sh"
if [ -z "$(python -m model_store versions)" ]; then
  preset=${MNIST_TRAIN_PRESET:-cnn}
  echo "The model store is empty: training a quick $preset model first, then the full one in the background."
  started=$SECONDS
  mnist-train --preset "$preset" --quick --verbose 0
  echo "Quick model ready in $((SECONDS - started)) s; starting the service."
  mkdir -p logs
  echo "Training the full $preset model in the background (log: logs/train-full.log); it replaces the quick one when published."
  # Niced: the service answering on the same cores comes first.
  nohup nice -n 10 mnist-train --preset "$preset" --verbose 0 >logs/train-full.log 2>&1 &
fi
exec mnist-serve "$@"
