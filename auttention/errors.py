"""The one exception type for mistakes a user can make (bad audio, labels, YAML, flags)."""


class UserError(Exception):
    """An error the user can fix; its message is one line naming the file or key and what to do."""
