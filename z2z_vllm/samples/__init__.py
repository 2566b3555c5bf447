"""Sample texts bundled with the package (for ``z2z compress --sample`` and the README quick start)."""

from importlib.resources import files

DEFAULT_SAMPLE = "html_calendar.py.txt"


def sample_text(name: str = DEFAULT_SAMPLE) -> str:
    """The text of a bundled sample file."""
    return files(__name__).joinpath(name).read_text(encoding="utf-8")
