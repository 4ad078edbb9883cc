"""The one exception type for mistakes a user can make and fix."""


class MedftError(Exception):
    """A user-caused problem (bad path, bad recipe, unreadable input).

    The message names the file, key or value at fault and says what to do; the
    CLI prints it as one line and exits with status 2.
    """


def first_line(error: BaseException, limit: int = 300) -> str:
    """The first line of ``error``'s message, cut to ``limit`` characters ("" when empty)."""
    lines = str(error).strip().splitlines()
    return lines[0][:limit] if lines else ""
