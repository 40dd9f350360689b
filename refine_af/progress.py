"""Progress that Argo shows: `done/total` written to the file Argo names in ARGO_PROGRESS_FILE.

Argo's executor reads that file while the pod runs and shows the fraction on the node in the UI and in
`refine-af status`. Outside a pod the variable is unset and this does nothing.
"""

from __future__ import annotations

import os


def report(done: int, total: int) -> None:
    path = os.environ.get("ARGO_PROGRESS_FILE")
    if path and total > 0:
        try:
            with open(path, "w") as f:
                f.write(f"{min(done, total)}/{total}\n")
        except OSError:  # progress is a courtesy: never fail a stage over it
            pass
