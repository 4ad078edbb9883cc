from medft.errors import first_line


def test_first_line_of_an_error_message():
    assert first_line(ValueError("\n  can't reach it\nTraceback ...")) == "can't reach it"
    assert first_line(ValueError("x" * 400)) == "x" * 300
    assert first_line(ValueError("x" * 400), limit=200) == "x" * 200
    assert first_line(OSError()) == ""  # an empty message must not raise IndexError
