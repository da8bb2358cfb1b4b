"""auttention: the science of one run of the attention / seq2seq autoencoder pipeline.

corpus -> spectrograms -> autoencoders -> features -> fusion -> SVR scoring.
This package never imports ray or the search layer.
"""

import os
import sys

__version__ = "0.1.0"

# TensorFlow's C++ log lines (start-up chatter, and e.g. oneDNN's "supports DT_INT64 only on platforms with
# AVX-512", logged as an error at the first step though nothing failed) are not for users; a real failure
# raises a Python exception, which the commands word in one line
TF_LOG_LEVEL = "3"


def import_tensorflow_quietly() -> None:
    """Import TensorFlow with its C++ start-up chatter (CUDA probing, CPU features) kept off stderr.

    TF_CPP_MIN_LOG_LEVEL does not silence the lines absl prints before it is initialised, so
    stderr is pointed at /dev/null for the import only. An import error still raises as usual.
    """

    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", TF_LOG_LEVEL)
    try:
        saved = os.dup(2)
    except OSError:
        import tensorflow  # noqa: F401

        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        sys.stderr.flush()
        os.dup2(devnull, 2)
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")  # probes CUDA now, while stderr is muted
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
