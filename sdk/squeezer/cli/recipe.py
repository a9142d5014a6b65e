"""``squeezer recipe``: validate, show resolved, and document the recipe schema."""

from __future__ import annotations

import json
import re
import typing
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

recipe_app = typer.Typer(
    name="recipe",
    help="Validate recipes, show them with defaults filled in, and list every option.",
    epilog="Examples:\n\n  squeezer recipe validate recipe.toml\n\n  squeezer recipe schema\n",
    no_args_is_help=True,
    rich_markup_mode=None,  # help text is plain: [model] and squeezer[onnx] are not rich markup
)

RecipeArg = Annotated[Path, typer.Argument(help="Recipe TOML file.", show_default=False)]

# recipe field -> extension point of the plugin it names
STRATEGY_FIELDS = {
    "importance": "importance",
    "scheduler": "scheduler",
    "quantizer": "quantizer",
    "distillation": "distillation_loss",
}


def load_checked(path: Path) -> Any:
    """Load ``path`` and check its plugin names and options against the installed plugins."""
    from squeezer.plugin_manager import load_registry
    from squeezer.recipe import check_strategies, load_recipe

    recipe = load_recipe(path)
    check_strategies(recipe, load_registry(block=recipe.disable_plugins))
    return recipe


@recipe_app.command("validate", epilog="Example:\n\n  squeezer recipe validate recipe.toml\n")
def validate_command(recipe: RecipeArg) -> None:
    """Check a recipe: TOML syntax, every field, stage types, plugin names and their options, and
    that its factories exist (each module is found on the import path and its source read for the
    function; the user's code is not run, so what the factories return is checked by squeezer run).

    Prints 'ok: RECIPE (N stages; factories found, not run: ...)'; any problem is one line naming the file and field.
    """
    from squeezer.cli.preflight import check_factories

    loaded = load_checked(recipe)
    found = check_factories(loaded, recipe)
    n = len(loaded.stages)
    typer.echo(f"ok: {recipe} ({n} stage{'s' if n != 1 else ''}; factories found, not run: "
               f"{', '.join(dict.fromkeys(found))})")


@recipe_app.command("show", epilog="Examples:\n\n  squeezer recipe show recipe.toml\n\n"
                                    "  squeezer recipe show recipe.toml --json\n")
def show_command(
    recipe: RecipeArg,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of TOML.")] = False,
) -> None:
    """Print a recipe fully resolved, every default filled in, as TOML (or JSON with --json)."""
    from squeezer.recipe import recipe_to_dict

    data = recipe_to_dict(load_checked(recipe))
    if json_out:
        typer.echo(json.dumps(data, indent=2, default=str))
    else:
        import tomli_w  # a declared dependency (the stdlib reads TOML but does not write it)

        typer.echo(tomli_w.dumps(_drop_none(data)), nl=False)


def _drop_none(value: Any) -> Any:
    """TOML has no null: an unset optional field is simply left out."""
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_drop_none(v) for v in value]
    return value


# --- schema ----------------------------------------------------------------------------------


def type_name(hint: Any) -> str:
    """``int``, ``str | None``, ``tuple[str, ...]``: a type as a recipe author would read it."""
    if isinstance(hint, str):
        text = hint
    elif isinstance(hint, type) and not typing.get_args(hint):
        text = hint.__name__
    else:
        text = str(hint)
    text = text.replace("typing.", "").replace("NoneType", "None")
    return re.sub(r"\b(?:[A-Za-z_]\w*\.)+([A-Za-z_]\w*)", r"\1", text)


def plain(value: Any) -> Any:
    """A default value as JSON-able data."""
    import attrs

    if attrs.has(type(value)):
        return {a.name: plain(getattr(value, a.name)) for a in attrs.fields(type(value)) if a.name != "source"}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def field_docs(cls: type, *, skip: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Name, type, default (or required) and help of every init field of an attrs class."""
    import attrs

    from squeezer.recipe.configs import Optim

    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # a plugin's annotations may not resolve; fall back to their text
        hints = {}
    docs = []
    for a in attrs.fields(cls):
        if not a.init or a.name in skip or a.metadata.get("hidden"):
            continue
        if a.name == "optim" and hints.get(a.name) == Optim | None:  # a stage's [training] keys, written inline
            docs.append({"name": "optim", "type": "[training] keys", "required": False, "default": None,
                         "help": "optimizer settings for this stage: any [training] key written in the stage "
                                 "(e.g. lr = 0.001) overrides [training] for it"})
            continue
        entry: dict[str, Any] = {"name": a.name, "type": type_name(hints.get(a.name, a.type or "any"))}
        if a.default is attrs.NOTHING:
            entry["required"] = True
        else:
            default = a.default
            if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
                default = default.factory(None) if default.takes_self else default.factory()
            entry["required"] = False
            entry["default"] = plain(default)
        entry["help"] = str(a.metadata.get("help", ""))
        docs.append(entry)
    return docs


def schema() -> dict[str, Any]:
    """The whole recipe reference: top-level fields, sections, stage types and plugin options."""
    from squeezer.compress.targets import Targets
    from squeezer.plugin_manager import load_registry
    from squeezer.recipe import STAGE_TYPES, Budget, Factory, Optim, QuantizerOverride, Recipe
    from squeezer.recipe.configs import ActivationOverride, Activations

    sections = {"model": Factory, "data": Factory, "training": Optim, "budget": Budget, "targets": Targets}
    top = [d for d in field_docs(Recipe, skip=("source", "stages")) if d["name"] not in sections]
    stages = {}
    for name, cls in STAGE_TYPES.items():
        fields = field_docs(cls)
        for f in fields:
            if f["name"] in STRATEGY_FIELDS:
                f["plugins"] = STRATEGY_FIELDS[f["name"]]
        stages[name] = {"help": (cls.__doc__ or "").strip().splitlines()[0], "fields": fields}
    registry = load_registry()
    plugins: dict[str, list[dict[str, Any]]] = {}
    for info in registry:
        plugins.setdefault(info.kind, []).append(
            {"name": info.name, "plugin": info.plugin, "version": info.version, "help": info.help,
             "options": field_docs(info.cls)}
        )
    return {
        "recipe": {"help": "top-level keys", "fields": top},
        "sections": {name: {"help": (cls.__doc__ or "").strip().splitlines()[0], "fields": field_docs(cls)}
                     for name, cls in sections.items()},
        "stages": stages,
        "quantizer_overrides": {"help": (QuantizerOverride.__doc__ or "").strip(),
                                "fields": field_docs(QuantizerOverride)},
        "activations": {"help": " ".join((Activations.__doc__ or "").split()), "fields": field_docs(Activations)},
        "activation_overrides": {"help": (ActivationOverride.__doc__ or "").strip(),
                                 "fields": field_docs(ActivationOverride)},
        "plugins": plugins,
        "notes": [
            "[model] and [data]: keys other than 'factory' are passed to the factory as keyword arguments",
            "a stage's optimizer keys (optimizer, lr, weight_decay, momentum, lr_schedule) override [training]",
            "a strategy is a name ('l1') or a table with 'name' and its options "
            "({ name = 'lsq', bits = 4, overrides = [{ pattern = '@first', bits = 8 }] })",
            "a stage's length is in epochs (epochs, epochs_per_round, warmup_epochs), in optimizer steps "
            "(steps, steps_per_round, warmup_steps) or, with a [budget], as shares of it (share, warmup_share; "
            "they sum to 1); steps and shares run as the nearest whole number of epochs, reported when the run starts",
        ],
    }


def _fields_table(title: str, fields: list[dict[str, Any]]) -> Table:
    from squeezer.cli.plugins import plain_rst

    table = Table(title=Text(plain_rst(title), style="bold"), title_justify="left", show_edge=False, expand=False)
    table.add_column("field", style="cyan", no_wrap=True)
    table.add_column("type", no_wrap=True)
    table.add_column("default")
    table.add_column("help", overflow="fold")
    for f in fields:
        default = "(required)" if f["required"] else json.dumps(f["default"])
        help_text = f["help"]
        if "plugins" in f:
            help_text = f"{help_text} (a registered {f['plugins']}, see below)"
        table.add_row(*(Text(plain_rst(cell)) for cell in (f["name"], f["type"], default, help_text)))
    if not fields:
        table.add_row("-", "", "", "no options")
    return table


@recipe_app.command("schema", epilog="Examples:\n\n  squeezer recipe schema\n\n"
                                      "  squeezer recipe schema --json\n")
def schema_command(
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Document every recipe section, every stage type and every installed plugin's options."""
    doc = schema()
    if json_out:
        typer.echo(json.dumps(doc, indent=2))
        return
    console = Console(highlight=False)
    console.print(_fields_table("top-level keys", doc["recipe"]["fields"]))
    for name, section in doc["sections"].items():
        console.print()
        console.print(_fields_table(f"[{name}]  {section['help']}", section["fields"]))
    for name, stage in doc["stages"].items():
        console.print()
        console.print(_fields_table(f"[[stages]] type = {name!r}  {stage['help']}", stage["fields"]))
    console.print()
    console.print(_fields_table("quantizer overrides = [{ pattern = ..., ... }]",
                                doc["quantizer_overrides"]["fields"]))
    console.print()
    console.print(_fields_table(f"activations = {{ bits = 8, ... }}  (prune and quantize stages)  "
                                f"{doc['activations']['help']}", doc["activations"]["fields"]))
    console.print()
    console.print(_fields_table("activations.overrides = [{ pattern = ..., ... }]",
                                doc["activation_overrides"]["fields"]))
    for kind, entries in doc["plugins"].items():
        for e in entries:
            console.print()
            console.print(_fields_table(f"{kind} {e['name']!r} (plugin {e['plugin']})  {e['help']}",
                                        e["options"]))
    console.print()
    for note in doc["notes"]:
        console.print(Text(f"note: {note}"))
