"""Feedback pages onto Canvas submissions as comment attachments, through Canvas's REST API.

Canvas's "Re-Upload Submissions" takes ``canvas_feedback_<assignment>.zip`` with no token, but attaches
each file under the name of the file the student handed in (``FileInContext.attach(..., display_name)``
with the submitted attachment's name, canvas-lms app/models/assignment.rb ``generate_comments_from_files``):
the page then reads as ``causal_attention.ipynb``. Through the API it keeps its own name. For each file of
the same zip (its name begins as Canvas named the student's file, with the user id):

1. ``POST /api/v1/courses/:course_id/assignments/:assignment_id/submissions/:user_id/comments/files``
   (name, size, content_type) -> where to upload;
2. ``POST`` the file there, with the parameters Canvas gave, then follow its redirect to finish -> the file id;
3. ``PUT /api/v1/courses/:course_id/assignments/:assignment_id/submissions/:user_id`` with
   ``comment[file_ids][]`` -> a comment with the page attached
(Canvas's "File Uploads" and "Submission Comments" API documentation).
"""

import re
import zipfile
from pathlib import Path, PurePosixPath

COMMENT = "Your feedback from the autograder is attached."


def _user_and_name(entry: str) -> tuple[str, str]:
    """Canvas's user id (the first all-digit part, as Canvas reads it) and the page's own name."""
    name = PurePosixPath(entry).name
    match = re.match(r"^(?:[^_]*_)*?(?P<user>\d+)_(?:\d+)_(?P<page>.+)$", name)
    if not match:
        raise ValueError(f"{entry}: not named as Canvas names a submission (name_userid_fileid_file)")
    return match.group("user"), match.group("page")


def upload_feedback(feedback_zip: Path, base_url: str, course_id: str, assignment_id: str, token: str,
                    session=None) -> list[str]:
    """Attach each page of ``feedback_zip`` to its student's submission; the user ids done, in order."""
    import requests

    session = session or requests.Session()
    auth = {"Authorization": f"Bearer {token}"}
    submissions = f"{base_url.rstrip('/')}/api/v1/courses/{course_id}/assignments/{assignment_id}/submissions"
    done = []
    with zipfile.ZipFile(feedback_zip) as archive:
        for entry in archive.namelist():
            user, page = _user_and_name(entry)
            data = archive.read(entry)
            ticket = session.post(f"{submissions}/{user}/comments/files", headers=auth,
                                  data={"name": page, "size": len(data), "content_type": "text/html"})
            ticket.raise_for_status()
            ticket = ticket.json()
            # the upload goes to where Canvas says (often a storage service that wants no token)
            uploaded = session.post(ticket["upload_url"], data=ticket["upload_params"],
                                    files={"file": (page, data, "text/html")}, allow_redirects=False)
            if uploaded.is_redirect:
                uploaded = session.get(uploaded.headers["Location"], headers=auth)
            uploaded.raise_for_status()
            comment = session.put(f"{submissions}/{user}", headers=auth,
                                  data={"comment[file_ids][]": uploaded.json()["id"], "comment[text_comment]": COMMENT})
            comment.raise_for_status()
            done.append(user)
    return done
