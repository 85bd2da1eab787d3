"""benchmarks/RESULTS.md: each benchmark script owns one section, from its '## ' heading to the next."""
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from celebgan.io import atomic_write  # noqa: E402  (found through the path above, installed or not)


def section_pattern(heading: str) -> re.Pattern:
    """A RESULTS.md section: its heading line, then its body (group 1) up to the next '## ' or the end."""
    return re.compile(rf"^{re.escape(heading)}\n(.*?)(?=^## |\Z)", re.S | re.M)


def write_section(path: Path, section: str) -> None:
    """Replace the section of RESULTS.md under `section`'s first line, its heading, or append it;
    the other sections stay as they are."""
    heading = section.split("\n", 1)[0]
    text = path.read_text() if path.is_file() else "# Benchmark results\n\n"
    pattern = section_pattern(heading)
    section = section.rstrip("\n") + "\n\n"
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section
    with atomic_write(path) as tmp:
        tmp.write_text(text)
