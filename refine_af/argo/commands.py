"""`refine-af submit | status | pull`: the cluster side of the CLI, registered onto `refine_af.cli.app`.

    refine-af submit --argo-server https://argo.example --namespace ml --config my-run.yaml --wait
    refine-af submit --via kube --namespace ml --with-template      # Kubernetes API, kubeconfig credentials
    refine-af status refine-af-x7k2p --argo-server https://argo.example --namespace ml
    refine-af pull --run s3://refine-af/runs/refine-af-x7k2p sft-refine-af --to results/

ARGO_SERVER, ARGO_NAMESPACE, ARGO_TOKEN and ARGO_INSECURE_SKIP_VERIFY stand in for the flags, as in Argo's CLI.
"""

from enum import StrEnum
from typing import Annotated

import typer

from refine_af.config import load_config


class Via(StrEnum):
    argo = "argo"
    kube = "kube"


ServerOpt = Annotated[str | None, typer.Option(
    "--argo-server", envvar="ARGO_SERVER",
    help="Argo Server URL (https://host:port); with --via kube only for the UI link.")]
NamespaceOpt = Annotated[str, typer.Option("--namespace", "-n", envvar="ARGO_NAMESPACE",
                                           help="Namespace of the workflow (and its WorkflowTemplate).")]
ViaOpt = Annotated[Via, typer.Option(
    "--via", help="argo: the Argo Server's API; kube: the Kubernetes API with the kubeconfig's credentials.")]
TokenOpt = Annotated[str | None, typer.Option(
    "--token", help="Bearer token (default: $ARGO_TOKEN for --via argo, the kubeconfig's for --via kube).")]
InsecureOpt = Annotated[bool, typer.Option(
    "--insecure", envvar="ARGO_INSECURE_SKIP_VERIFY", help="Do not verify the server's TLS certificate.")]


def register(app: typer.Typer) -> None:
    """Add the cluster commands to the `refine-af` app (cli.py calls this last: importing it here is not circular)."""
    from refine_af.cli import ConfigOpt, PresetOpt, SetOpt, _user_errors

    @app.command()
    @_user_errors
    def submit(argo_server: ServerOpt = None, namespace: NamespaceOpt = ..., config: ConfigOpt = None,
               set_: SetOpt = None, via: ViaOpt = Via.argo, token: TokenOpt = None, insecure: InsecureOpt = False,
               with_template: Annotated[bool, typer.Option(
                   "--with-template",
                   help="Create or replace the WorkflowTemplate first (a cluster without the Helm chart, or one "
                        "whose template predates this config's cluster section).")] = False,
               wait_: Annotated[bool, typer.Option("--wait", help="Wait for the workflow to finish.")] = False,
               timeout: Annotated[float | None, typer.Option(help="With --wait: give up after this many seconds.")]
               = None, preset: PresetOpt = None) -> None:
        """Render the pipeline for a config and submit it as an Argo Workflow; prints its name and UI link."""
        from refine_af.argo import client
        from refine_af.argo.compile import render

        template, workflow = render(load_config(config, set_ or [], preset=preset))
        target = dict(via=via.value, server=argo_server, namespace=namespace, token=token, insecure=insecure)
        name = client.submit(workflow, template=template if with_template else None, **target)
        typer.echo(f"submitted {name}")
        link = client.ui_link(argo_server, namespace, name)
        if link:
            typer.echo(f"ui: {link}")
        if wait_:
            final = client.wait(name, timeout=float("inf") if timeout is None else timeout, poll=10.0, **target)
            typer.echo(client.format_status(final))
            if final["phase"] != "Succeeded":
                raise typer.Exit(1)

    @app.command()
    @_user_errors
    def status(name: Annotated[str, typer.Argument(help="The workflow's name, as `submit` printed it.")],
               argo_server: ServerOpt = None, namespace: NamespaceOpt = ..., via: ViaOpt = Via.argo,
               token: TokenOpt = None, insecure: InsecureOpt = False) -> None:
        """Show a submitted workflow's phase and each stage's phase, progress and outputs."""
        from refine_af.argo import client

        d = client.status(name, via=via.value, server=argo_server, namespace=namespace, token=token,
                          insecure=insecure)
        typer.echo(client.format_status(d))
        link = client.ui_link(argo_server, namespace, name)
        if link:
            typer.echo(f"ui: {link}")

    @app.command()
    @_user_errors
    def pull(stage: Annotated[str, typer.Argument(help="Stage name, as in `refine-af show`.")],
             run: Annotated[str, typer.Option("--run", help="Run location (s3://bucket/runs/<workflow>).")],
             to: Annotated[str, typer.Option("--to", help="Destination folder; files go to <to>/<stage>/.")] = ".",
             set_: SetOpt = None) -> None:
        """Download the outputs of a finished stage (the files its manifest lists)."""
        from refine_af.argo.client import pull as pull_files

        files = pull_files(run, stage, to, load_config(None, set_ or []).s3)
        size = sum(p.stat().st_size for p in files)
        typer.echo(f"{stage}: {len(files)} files ({size / 1e6:.1f} MB) in {files[-1].parent if files else to}")
