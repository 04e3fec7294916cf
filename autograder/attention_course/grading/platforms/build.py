"""The Gradescope autograder zip and the PrairieLearn question folder of an assignment.

Both carry the course package as a wheel built from this checkout, the instructor notebook (hidden
tests included) where the platform keeps it from students, the grading settings (``run.Config``),
and the versions of this environment pinned (``constraints.txt``: torch from PyTorch's CPU index,
the package's own requirements and the kernel's from PyPI), so that the platform grades with what
grades here. Their entry points run ``run`` (see there for the folders and what students see).
"""

import json
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
import zipfile
from dataclasses import asdict
from importlib import metadata
from pathlib import Path

import nbformat

from attention_course.grading.collect import answer_ids
from attention_course.grading.course import ASSIGNMENTS, assignments_in, source_notebook
from attention_course.grading.limits import Limits
from attention_course.grading.platforms import VISIBILITIES
from attention_course.grading.platforms.run import GRADESCOPE_ENV, PRAIRIELEARN_ENV, Config, source_path

TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
# The kernels' own packages, beside the package's requirements (nbclient needs a kernel to talk to).
KERNEL_REQUIREMENTS = ("ipykernel", "jupyter_client")

# Gradescope's default container: 768 MB and half a virtual CPU, 10 minutes for the whole run
# (its autograder troubleshooting page); PrairieLearn's grader host: 2 GiB, 0.9 CPU, at most 600 s
# (grader-host's config, externalGrading.md). One torch thread per kernel; the student's notebook and its
# harvest notebook, at most ``notebook_seconds`` each, fit in the 600 s with the start of the zygote. The
# memory limit per kernel stays above the container's: a kernel's address space is 1.4-1.6 GB as it
# starts (torch imported; benchmarks/platform_footprint.py), so the container's limit is the one that holds.
PLATFORM_LIMITS = Limits(notebook_seconds=270, threads=1)
PRAIRIELEARN_TIMEOUT = 600


def build_wheel(root: Path, destination: Path) -> Path:
    """The course package as a wheel, built offline from a copy of the checkout (no build/ nor
    egg-info left in it)."""
    with tempfile.TemporaryDirectory(prefix="attention-course-wheel-") as tree:
        for name in ("pyproject.toml", "README.md"):
            shutil.copy(Path(root) / name, tree)
        shutil.copytree(Path(root) / "autograder", Path(tree) / "autograder",
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc"))
        destination.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                        "--quiet", "--wheel-dir", str(destination), tree], check=True)
    (wheel,) = destination.glob("attention_course-*.whl")
    return wheel


def _requirements(wheel: Path) -> list[str]:
    """The names of the wheel's requirements (its METADATA's Requires-Dist, extras left out)."""
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        lines = archive.read(name).decode().splitlines()
    required = [line.split(":", 1)[1].strip() for line in lines if line.startswith("Requires-Dist:")]
    return [re.match(r"[A-Za-z0-9_.-]+", r).group(0) for r in required if "extra ==" not in r]


def constraints(wheel: Path) -> str:
    """This environment's versions of what the platform installs, one ``name==version`` a line (torch
    without its local label: ``2.13.0+cpu`` is PyTorch's CPU index's ``2.13.0``)."""
    names = [*_requirements(wheel), *KERNEL_REQUIREMENTS]
    return "".join(f"{name}=={metadata.version(name).split('+')[0]}\n" for name in dict.fromkeys(names))


def _install(python: str, folder: str, wheel: Path, pins: str) -> list[str]:
    """The commands that install the package beside the pinned torch (setup.sh's and the Dockerfile's)."""
    torch = next(line for line in pins.splitlines() if line.startswith("torch=="))
    return [f'{python} -m pip install --no-cache-dir "{torch}" --index-url {TORCH_INDEX}',
            f'{python} -m pip install --no-cache-dir -c {folder}/constraints.txt {folder}/{wheel.name} '
            + " ".join(KERNEL_REQUIREMENTS),
            f'{python} -c "import attention_course.grading.platforms.run"']


def _config(root: Path, assignment: str, hidden_visibility: str, limits: Limits) -> Config:
    if hidden_visibility not in VISIBILITIES:
        raise ValueError(f"visibility {hidden_visibility!r}: one of {', '.join(VISIBILITIES)}")
    ids = {a: sorted(answer_ids(nbformat.read(source_notebook(root, a), as_version=4))) for a in assignments_in(root)}
    return Config(assignment, ids, asdict(limits), hidden_visibility)


def _course_files(root: Path, assignment: str, config: Config, folder: Path) -> None:
    """The instructor notebook and the settings, where ``run`` looks for them."""
    notebook = source_path(folder, assignment)
    notebook.parent.mkdir(parents=True)
    shutil.copy(source_notebook(root, assignment), notebook)
    config.save(folder)


def _script(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


SETUP_SH = """#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder image (Ubuntu): Python, bubblewrap (it
# confines the kernels where the container allows), then the course package with the versions it was
# packaged with, in a venv. {assignment}, attention-course {version}.
set -euo pipefail
source_dir="$(cd "$(dirname "$0")" && pwd)"
venv="${{{env}:-/autograder}}/venv"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends python3 python3-venv bubblewrap
python3 -m venv "$venv"
{install}
"""

RUN_AUTOGRADER = """#!/usr/bin/env bash
# Gradescope runs this for each submission (in /autograder): it writes /autograder/results/results.json.
# ${env} sets another folder than /autograder, ATTENTION_COURSE_PYTHON another Python than setup.sh's venv.
set -euo pipefail
base="${{{env}:-/autograder}}"
exec "${{ATTENTION_COURSE_PYTHON:-$base/venv/bin/python}}" -m attention_course.grading.platforms.run gradescope --base "$base"
"""


def package_gradescope(root: Path, assignment: str, out_zip: Path, hidden_visibility: str = "after_due_date",
                       limits: Limits = PLATFORM_LIMITS) -> Path:
    """Gradescope's autograder zip for ``assignment``: setup.sh and run_autograder at its root (its
    autograder specification), the wheel, constraints.txt, the instructor notebook and the settings."""
    from attention_course import __version__

    config = _config(root, assignment, hidden_visibility, limits)
    with tempfile.TemporaryDirectory(prefix="gradescope-") as folder:
        folder = Path(folder)
        wheel = build_wheel(root, folder)
        pins = constraints(wheel)
        (folder / "constraints.txt").write_text(pins)
        _course_files(root, assignment, config, folder)
        install = "\n".join(_install('"$venv/bin/python"', '"$source_dir"', wheel, pins))
        _script(folder / "setup.sh", SETUP_SH.format(assignment=assignment, version=__version__, env=GRADESCOPE_ENV, install=install))
        _script(folder / "run_autograder", RUN_AUTOGRADER.format(env=GRADESCOPE_ENV))
        out_zip = Path(out_zip)
        out_zip.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(out_zip, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(folder.rglob("*")):
                if path.is_file():
                    info = zipfile.ZipInfo.from_file(path, path.relative_to(folder).as_posix())
                    archive.writestr(info, path.read_bytes(), zipfile.ZIP_DEFLATED)  # keeps the scripts executable
    return out_zip


DOCKERFILE = """# The external grader's image for attention-course {version}: build it in this folder and push it where
# your PrairieLearn can pull it, then name it in ../info.json ("image"):
#   docker build -t {image} . && docker push {image}
FROM python:{python}-slim
RUN apt-get update && apt-get install -y --no-install-recommends bubblewrap && rm -rf /var/lib/apt/lists/*
COPY constraints.txt {wheel} /tmp/attention-course/
RUN {install}
"""

RUN_GRADER = """#!/usr/bin/env bash
# PrairieLearn runs this for each submission (info.json's entrypoint): it writes /grade/results/results.json.
# ${env} sets another folder than /grade, ATTENTION_COURSE_PYTHON another Python than the image's.
set -euo pipefail
base="${{{env}:-/grade}}"
exec "${{ATTENTION_COURSE_PYTHON:-python3}}" -m attention_course.grading.platforms.run prairielearn --base "$base"
"""

QUESTION_HTML = """<pl-question-panel>
  <p>Upload your notebook of {assignment} (<code>{notebook}</code>, any file name), as saved by Colab or Jupyter
  (File &gt; Download .ipynb). It is graded with the hidden tests; each item shows its points and the mistake
  that cost them.</p>
  <pl-file-upload file-patterns="*.ipynb"></pl-file-upload>
</pl-question-panel>
<pl-submission-panel>
  <pl-external-grader-results></pl-external-grader-results>
</pl-submission-panel>
"""


def package_prairielearn(root: Path, assignment: str, out_dir: Path, image: str | None = None,
                         limits: Limits = PLATFORM_LIMITS) -> Path:
    """A PrairieLearn question folder for ``assignment`` (copy it into the course's questions/): info.json
    with external grading on, question.html (a notebook upload), tests/ (what the grader reads at
    /grade/tests: the entry point, the instructor notebook, the settings) and image/ (the Dockerfile of
    the grader's image, with the wheel and constraints.txt)."""
    from attention_course import __version__
    from attention_course.grading.selfgrade import repository

    image = image or f"attention-course-grader:{__version__}"
    config = _config(root, assignment, "visible", limits)
    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tests, image_folder = out_dir / "tests", out_dir / "image"
    tests.mkdir(parents=True)
    _course_files(root, assignment, config, tests)
    _script(tests / "run_grader", RUN_GRADER.format(env=PRAIRIELEARN_ENV))
    wheel = build_wheel(root, image_folder)
    pins = constraints(wheel)
    (image_folder / "constraints.txt").write_text(pins)
    install = " \\\n && ".join(_install("python", "/tmp/attention-course", wheel, pins) + ["rm -rf /tmp/attention-course"])
    (image_folder / "Dockerfile").write_text(DOCKERFILE.format(
        version=__version__, image=image, python=f"{sys.version_info.major}.{sys.version_info.minor}", wheel=wheel.name,
        install=install))
    info = {
        # The same question, packaged again, keeps its id.
        "uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{repository()}/{assignment}")),
        "title": f"attention-course {assignment}",
        "topic": "Attention",
        "type": "v3",
        "singleVariant": True,
        "gradingMethod": "External",
        "externalGradingOptions": {"enabled": True, "image": image, "entrypoint": "/grade/tests/run_grader",
                                   "timeout": PRAIRIELEARN_TIMEOUT},
    }
    (out_dir / "info.json").write_text(json.dumps(info, indent=2) + "\n")
    (out_dir / "question.html").write_text(QUESTION_HTML.format(assignment=assignment, notebook=ASSIGNMENTS[assignment]))
    return out_dir

