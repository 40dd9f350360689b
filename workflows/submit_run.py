"""Submit a refine-af run to an Argo Server from Python, the way a user scripts it (Hera under the hood).

    ARGO_TOKEN=... python workflows/submit_run.py https://argo.example.com my-namespace my-run.yaml

It renders the same Workflow that `refine-af submit` would (the WorkflowTemplate `refine-af` must be installed, e.g.
by the Helm chart, or by `refine-af submit --with-template`), changes one setting in Python and submits it.
"""

from __future__ import annotations

import os
import sys

from hera.workflows import WorkflowsService
from hera.workflows.models import Workflow, WorkflowCreateRequest

from refine_af.argo.compile import render
from refine_af.config import load_config


def main(server: str, namespace: str, config_file: str | None = None) -> None:
    config = load_config(config_file, ["instances.shards=8", "evaluate.shards=8"])  # eight GPU pods per fan-out
    _, workflow = render(config)
    service = WorkflowsService(host=server, token=f"Bearer {os.environ['ARGO_TOKEN']}", namespace=namespace)
    created = service.create_workflow(WorkflowCreateRequest(workflow=Workflow.model_validate(workflow)),
                                      namespace=namespace)
    print(f"{created.metadata.name}: {server.rstrip('/')}/workflows/{namespace}/{created.metadata.name}")


if __name__ == "__main__":
    main(*sys.argv[1:])
