"""The repository's address is written once (pyproject.toml) and every badge and install line uses it."""

import re
import tomllib

import nbformat
import pytest

from course_copy import ROOT

REPOSITORY = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Repository"]
SLUG = REPOSITORY.removeprefix("https://github.com/")
LINK = re.compile(r"(?:colab\.research\.google\.com/github|github\.com)/([\w.-]+/[\w.-]+)(?:/blob/main/([\w./-]+))?")

PAGES = [ROOT / "README.md", *sorted(ROOT.glob("notebooks/*.ipynb")), *sorted(ROOT.glob("source/*/*.ipynb")),
         *sorted(ROOT.glob("release/*/*.ipynb"))]


def _text(path):
    if path.suffix == ".ipynb":
        return "\n".join(cell.source for cell in nbformat.read(path, as_version=4).cells)
    return path.read_text()


@pytest.mark.parametrize("path", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_use_the_one_repository_address(path):
    for slug, target in LINK.findall(_text(path)):
        if slug.startswith(("pytorch/", "huggingface/", "jupyter/", "karpathy/")):
            continue
        assert slug == SLUG, f"{path.name} links to {slug}, not {SLUG} (pyproject.toml's Repository)"
        if target:
            assert (ROOT / target).is_file(), f"{path.name} links to {target}, which does not exist"


@pytest.mark.parametrize("path", PAGES[1:], ids=lambda p: str(p.relative_to(ROOT)))
def test_notebooks_open_with_a_badge_to_themselves(path):
    first = nbformat.read(path, as_version=4).cells[0].source
    shown = path.relative_to(ROOT)
    if shown.parts[0] == "source":  # the instructor version points students at their release
        shown = ROOT.joinpath("release", *shown.parts[1:]).relative_to(ROOT)
    assert f"colab.research.google.com/github/{SLUG}/blob/main/{shown}" in first


def test_readme_has_a_badge_for_every_lesson_and_release():
    readme = (ROOT / "README.md").read_text()
    for path in [*ROOT.glob("notebooks/*.ipynb"), *ROOT.glob("release/*/*.ipynb")]:
        assert f"colab.research.google.com/github/{SLUG}/blob/main/{path.relative_to(ROOT)}" in readme


VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
NOTEBOOKS = PAGES[1:]
PIP_LINE = re.compile(r"^\s*[%!]\s*pip\s+install\b(.*)$")
COURSE_REQUIREMENT = re.compile(r"""["']?attention-course\s*@\s*git\+(?P<url>[^\s"'@]+)(?:@(?P<ref>[^\s"']+))?["']?""")


def _pip_lines(path):
    """The ``%pip install`` / ``!pip install`` lines of a notebook's code cells (continuations joined)."""
    lines = []
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type == "code":
            lines += [m.group(1) for m in map(PIP_LINE.match, cell.source.replace("\\\n", " ").splitlines()) if m]
    return lines


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT)))
def test_install_lines_pin_the_release_of_pyproject_version(path):
    """Each install line takes the course from the repository at the tag v<version> (what a student
    gets matches the notebook they opened, whatever lands on main later)."""
    lines = _pip_lines(path)
    assert lines, f"{path.name}: no %pip install line (the set-up cell installs the course package)"
    expected = f"attention-course @ git+{REPOSITORY}@v{VERSION}"
    for line in lines:
        found = COURSE_REQUIREMENT.search(line)
        assert found, f"{path.name}: '%pip install{line}' does not install the course package ({expected!r})"
        assert found["url"] in (REPOSITORY, f"{REPOSITORY}.git"), \
            f"{path.name}: installs from {found['url']}, not {REPOSITORY} (pyproject.toml's Repository)"
        assert found["ref"] == f"v{VERSION}", \
            f"{path.name}: installs {found['ref'] or 'the default branch'}, not the tag v{VERSION} (pyproject.toml's version): use {expected!r}"
