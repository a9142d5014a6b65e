"""Built-in plugin: tasks (what is trained and measured): classification (per example or per
token), language modelling, regression."""

from squeezer import hookimpl
from squeezer.registry import Registry
from squeezer_tasks.tasks import Classification, LanguageModel, Regression, TokenClassification


@hookimpl
def squeezer_register_tasks(registry: Registry) -> None:
    registry.add_task("classification", Classification)
    registry.add_task("language_model", LanguageModel)
    registry.add_task("regression", Regression)
    registry.add_task("token_classification", TokenClassification)
