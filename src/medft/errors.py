"""The one exception type for mistakes a user can make and fix."""


class MedftError(Exception):
    """A user-caused problem (bad path, bad recipe, unreadable input).

    The message names the file, key or value at fault and says what to do; the
    CLI prints it as one line and exits with status 2.
    """
