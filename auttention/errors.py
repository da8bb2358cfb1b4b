"""The exceptions the commands word for a user: UserError for mistakes a user can make (bad audio, labels, YAML,
flags), TrainingDiverged for a training that cannot go on (here, so that catching it imports no TensorFlow)."""


class UserError(Exception):
    """An error the user can fix; its message is one line naming the file or key and what to do."""


class TrainingDiverged(RuntimeError):
    """The training loss (or a model's features) became NaN or infinite."""
