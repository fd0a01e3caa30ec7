"""`recfunnel models` and `recfunnel datasets`: what can be trained, on what."""

from __future__ import annotations

from rich.markup import escape

from recfunnel.cli.common import DataRootOpt, console


def models() -> None:
    """List model families with their hyper-parameters and defaults."""
    from recfunnel.models import MODELS

    for name, cls in sorted(MODELS.items()):
        doc = (cls.__doc__ or "").strip()  # a class's own docstring: None is not inherited
        summary = doc.splitlines()[0] if doc else "(no description)"
        trainable = getattr(cls, "trainable", True)
        objective = getattr(cls, "objective", "-") if trainable else "-"
        console.print(
            f"[bold]{name}[/bold] ({'trained' if trainable else 'closed form'}; "
            f"objective {escape(str(objective))}): {escape(summary)}"
        )
        for field, info in cls.Config.model_fields.items():
            default = info.get_default(call_default_factory=True)
            console.print(escape(f"    {field} = {default!r}  {info.description or ''}"))


def datasets(data_root: DataRootOpt = None) -> None:
    """List the named datasets and whether they are present under the data root."""
    from recfunnel.data.readers import DATASETS
    from recfunnel.settings import data_root as root_of

    root = root_of(data_root)
    console.print(f"data root: {root}")
    for name in DATASETS:
        console.print(f"  {name:<20} {'present' if (root / name).exists() else 'absent'}")
