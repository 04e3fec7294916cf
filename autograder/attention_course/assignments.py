"""The course's assignments, each registered once, here.

A record names an assignment's folder and notebook (fixed by the course design: graders, links and
badges use them), the module of reference solutions its exercises have (``kernels/<module>.py``;
calling it from an answer is a shortcut), and what its set-up cell hands to the student. Everything
else follows from the notebook's stem, ``topic``: its checks (``checks/<topic>.py``), its
exercises' specs (``exercises/<topic>.py`` and their kernel halves ``exercises/kernel/<topic>.py``,
for assignments with code exercises) and its example class (``grading/examples/<topic>.py``). The harvest
kernel gets the kernel halves and the handed-over objects, nothing else of the package. ``tests/test_assignment_record.py`` fails when any of
them is missing, or when a module of those folders belongs to no record.
"""

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class AssignmentRecord:
    id: str
    notebook: str
    kernels: str | None  # attention_course.kernels.<kernels>: the reference solutions (None: a quiz)
    # Package objects (dotted paths) the set-up cell hands over: earlier assignments' solutions, the harness.
    handed_over: tuple[str, ...] = ()
    # Whether torch's fused attention is fine in answers: where the notebook hands attention over.
    fused_attention_allowed: bool = False

    @property
    def topic(self) -> str:
        return Path(self.notebook).stem


_CAUSAL = "attention_course.kernels.causal"
RECORDS = (
    AssignmentRecord("01_causal_attention", "causal_attention.ipynb", "causal"),
    AssignmentRecord("02_kv_cache", "kv_cache.ipynb", "kv_cache",
                     handed_over=(f"{_CAUSAL}.attention", f"{_CAUSAL}.causal_mask", f"{_CAUSAL}.split_heads",
                                  f"{_CAUSAL}.merge_heads", "attention_course.gpt2_forward.GPT2Decoder"),
                     fused_attention_allowed=True),
    AssignmentRecord("03_mqa", "mqa.ipynb", "mqa", handed_over=(f"{_CAUSAL}.causal_mask", "attention_course.kernels.kv_cache.KVCache")),
    AssignmentRecord("04_gqa", "gqa.ipynb", "gqa", handed_over=(f"{_CAUSAL}.causal_mask", "attention_course.kernels.kv_cache.KVCache")),
    AssignmentRecord("05_quiz", "quiz.ipynb", None),
    AssignmentRecord("06_long_context", "long_context.ipynb", "long_context",
                     handed_over=(f"{_CAUSAL}.causal_mask", "attention_course.kernels.kv_cache.KVCache",
                                  "attention_course.kernels.gqa.repeat_kv")),
    AssignmentRecord("07_latent_and_paged", "latent_and_paged.ipynb", "latent_and_paged", handed_over=(f"{_CAUSAL}.causal_mask",)),
)
BY_ID = {record.id: record for record in RECORDS}
