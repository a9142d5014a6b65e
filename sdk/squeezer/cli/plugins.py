"""``squeezer plugins``: what the installed plugins registered. Never imports torch."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

plugins_app = typer.Typer(
    name="plugins",
    help="Inspect the installed plugins and the strategies they register.",
    epilog="Example:\n\n  squeezer plugins list\n",
    no_args_is_help=True,
    rich_markup_mode=None,  # help text is plain: [model] and squeezer[onnx] are not rich markup
)

LIST_EPILOG = """\
Examples:

  squeezer plugins list

  squeezer plugins list --json

  SQUEEZER_BLOCK_PLUGINS=lsq squeezer plugins list
"""


def plain_rst(text: str) -> str:
    """A docstring's reST inline markup as a terminal shows it: ``code`` -> `code`, :class:`~a.B` -> `B`."""
    text = re.sub(r":[a-z]+:`~?([^`]+)`", lambda m: "`" + m.group(1).rsplit(".", 1)[-1] + "`", text)
    return re.sub(r"``([^`]+)``", r"`\1`", text)


def registry_listing() -> dict[str, list[dict[str, Any]]]:
    """Every registered strategy by extension point: name, plugin, version, one-line help."""
    from squeezer import load_registry
    from squeezer.registry import KINDS

    registry = load_registry()
    listing: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
    for info in registry:
        listing[info.kind].append(
            {"name": info.name, "plugin": info.plugin, "version": info.version, "help": info.help}
        )
    return listing


@plugins_app.command("list", epilog=LIST_EPILOG)
def list_command(
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """List every registered strategy, grouped by extension point, with its plugin and version.

    Plugins load through the 'squeezer' entry-point group; SQUEEZER_DISABLE_PLUGIN_AUTOLOAD=1
    keeps only the built-in ones and SQUEEZER_BLOCK_PLUGINS=a,b skips plugins a and b.
    """
    listing = registry_listing()
    if json_out:
        typer.echo(json.dumps(listing, indent=2))
        return
    console = Console(highlight=False)
    for kind, entries in listing.items():
        table = Table(title=f"{kind} ({len(entries)})", title_justify="left", show_edge=False)
        table.add_column("name", style="bold cyan")
        table.add_column("plugin")
        table.add_column("version")
        table.add_column("description", overflow="fold")
        for e in entries:
            table.add_row(*(Text(cell) for cell in (e["name"], e["plugin"], e["version"] or "-", plain_rst(e["help"]))))
        if not entries:
            table.add_row("-", "-", "-", "none registered")
        console.print(table)
        console.print()
