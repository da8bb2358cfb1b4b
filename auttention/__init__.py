"""auttention: the science of one run of the attention / seq2seq autoencoder pipeline.

corpus -> spectrograms -> autoencoders -> features -> fusion -> SVR scoring.
This package never imports ray or the search layer.
"""

__version__ = "0.1.0"
