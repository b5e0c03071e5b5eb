"""The ``model=<key>`` config options, generated from the registry's builder defaults.

A model's default hyper-parameters are written once, as its builder's keyword defaults
(:data:`aenp.models.registry.MODEL_SPECS`). Each option is the node ``{key, hparams}`` that
``aenp train model=<key>`` composes, so ``model.hparams.<name>=…`` overrides a default.
"""

from __future__ import annotations

from typing import Any

from hydra.core.config_store import ConfigStore

from aenp.models.registry import MODEL_SPECS

LEFT_TO_BUILDERS = ("max_grid_points", "hidden")
"""Hyper-parameters the options leave out, so the builder's default applies (add one with
``+model.hparams.<name>=…``): a safeguard and the fixed inputs' hidden widths, which no
experiment varies. Configs of earlier runs, which a run resumes only if they are unchanged,
do not have them."""
EXPERIMENT_DOMAIN = "${experiment.domain}"
"""Fixed inputs live on the experiment's training region."""


def model_config(key: str) -> dict[str, Any]:
    """The ``model`` node of ``key``: the key and its default hyper-parameters."""
    hparams = {
        name: value
        for name, value in MODEL_SPECS[key].default_hparams().items()
        if name not in LEFT_TO_BUILDERS
    }
    if "domain" in hparams:
        hparams["domain"] = EXPERIMENT_DOMAIN
    return {"key": key, "hparams": hparams}


def register_model_configs() -> None:
    """Stores one option of the ``model`` config group per registry key in Hydra's store."""
    store = ConfigStore.instance()
    for key in MODEL_SPECS:
        store.store(group="model", name=key, node=model_config(key))
