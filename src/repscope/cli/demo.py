"""``repscope demo``: the main job, the report on the embedded default model and data."""

from __future__ import annotations

import click

from repscope.cli._common import db_option, progress_option, settings, show_progress


@click.command()
@click.option("--n-images", default=1000, show_default=True, help="MNIST images to use.")
@click.option("--resolution", default=112, show_default=True, help="Input resolution (pixels).")
@click.option("--out", default="repscope-demo", show_default=True, type=click.Path(file_okay=False),
              help="Folder for the feature stores and report.html.")
@click.option("--batch-size", default=50, show_default=True)
@click.option("--folds", default=5, show_default=True, help="Cross-validation folds.")
@progress_option
@db_option
def demo(n_images: int, resolution: int, out: str, batch_size: int, folds: int) -> None:
    """Run the demo offline: extract EfficientNet-Lite0/Lite1 features on MNIST, analyse every
    layer, and write report.html (prints its path)."""
    from pathlib import Path

    from repscope.demo import DemoConfig, run_demo

    s = settings()
    cfg = DemoConfig(n_images=n_images, resolution=resolution, out=Path(out), db=s.db_path,
                     batch_size=batch_size, folds=folds, seed=s.seed, progress=show_progress())
    res = run_demo(cfg, log=lambda m: click.echo(m, err=True))
    for k, v in res.timings.items():
        click.echo(f"  {k}: {v:.1f} s", err=True)
    click.echo(str(res.report))


COMMANDS = [demo]
