"""``skybutler migrate``: upgrade a repository's registry to this skybutler's schema."""

from __future__ import annotations

import click


@click.command()
@click.argument("repo", type=click.Path(file_okay=False))
@click.option("--dry-run", is_flag=True, help="Show the steps an upgrade would take; change nothing.")
def migrate(repo: str, dry_run: bool) -> None:
    """Upgrade the registry of REPO to the schema of this skybutler.

    All steps run in one transaction: an interrupted upgrade changes nothing and
    can be run again, and an up-to-date repository is left as it is. Stop the
    jobs writing to the repository first, and back it up if it matters.
    """
    from ..config import RepositoryConfig
    from ..registry import upgrade

    cfg = RepositoryConfig.read(repo)
    steps = upgrade(cfg.registry.db, namespace=cfg.registry.namespace, root=repo, dry_run=dry_run)
    if not steps:
        click.echo(f"{repo} is up to date.")
        return
    click.echo(f"{'Would apply' if dry_run else 'Applied'} {len(steps)} step(s) to {repo}:")
    for step in steps:
        click.echo(f"  {step}")
