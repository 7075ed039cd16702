"""The commands and their safeguards, beside the study: they import it; nothing in the study imports them.

- :mod:`mnist_cnn.tooling.cli`: the ``python -m mnist_cnn.<command>`` programs and their argument handling.
- :mod:`mnist_cnn.tooling.runctl`: run folders and locks, signals, resuming, several processes, the thread policy.
- :mod:`mnist_cnn.tooling.safety`: reading checkpoints within bounds, MNIST's download and integrity checks.
"""
