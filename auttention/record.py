"""The records that cross module boundaries, typed in one place (see the classes for their fields)."""

from __future__ import annotations

NETWORKS = ("attention", "seq2seq")  # the two recurrent autoencoders
FUNCTIONALS = "functionals"  # the utterance functionals (auttention.baseline): a feature set, a folder, a row
FUSION = "fusion"  # the early fusion (scoring.fuse): one name in YAML, trials.csv, report, metrics
BRANCHES = (*NETWORKS, FUSION)
