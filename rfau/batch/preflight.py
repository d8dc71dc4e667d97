"""Checks a batch makes before it claims a request or reads a model (`rfau batch`, `rfau pipeline
run`, `rfau unlearn`): a method's settings, its device, and the modules it names against the model
the batch starts from."""

from __future__ import annotations

import tempfile
from pathlib import Path

from rfau.batch.base_model import staged_base_model
from rfau.batch.context import BatchContext
from rfau.config import TrainConfig, check_device_setting
from rfau.data import load_dataset
from rfau.methods.rfau import resolve_modules
from rfau.models.arch import build_model, default_architecture
from rfau.models.checkpoint import build_from_card, read_card
from rfau.params import BatchParams
from rfau.stages import method_config
from rfau.tracking.registry import Registry
from rfau.tracking.settings import TrackingSettings


def check_method_settings(method: str, config: dict | None, device_here: bool = True):
    """A method's settings -> its config, checked before a command reads a model or claims a
    request; the device must exist here when ``device_here`` (else only its name is checked:
    a pipeline's unlearn task may run on another machine)."""
    cfg = method_config(method, config)
    check_device_setting(getattr(cfg, "device", "auto"), device_here)
    return cfg


def check_before_claiming(p: BatchParams, settings: TrackingSettings, device_here: bool) -> None:
    """Method settings that would fail the unlearn stage fail here, before a request is claimed
    (load_params checked their form): the device (its availability only where the whole batch
    runs in this process) and the modules named by target_modules/taps, against the model the
    batch starts from."""
    cfg = check_method_settings(p.method, p.method_config, device_here)
    if getattr(cfg, "target_modules", None) or getattr(cfg, "taps", None):
        resolve_modules(_starting_model(p, settings), cfg)
    if settings.registry_exists():  # a store that is down or an experiment deleted fails here
        Registry(settings)


def _starting_model(p: BatchParams, settings: TrackingSettings):
    """The architecture (untrained) of the batch's base: the champion's, else the bootstrap
    recipe's. A local registry that does not exist yet is not created here."""
    champion = None
    if settings.registry_exists():
        reg = Registry(settings)
        champion = reg.champion()
    if champion is not None:
        with tempfile.TemporaryDirectory() as tmp:
            card = read_card(reg.fetch_version(champion.version, Path(tmp) / "base"))
        return build_from_card(card)  # any family: an imported model's own module names
    ds = load_dataset(p.dataset)
    if p.base_model_uri:  # the first batch starts from the user's model (imported here to look)
        ctx = BatchContext.open(p.store or None, settings)
        with staged_base_model(p.base_model_uri, ds, ctx, p.holdout_fraction) as original:
            if original is not None:
                return build_from_card(read_card(original))
    cfg = TrainConfig.preset(ds.kind, **p.train)
    kwargs = {"width": cfg.width} if cfg.width else {}
    arch = cfg.architecture or default_architecture(ds.kind)
    return build_model(arch, ds.input_shape[0], len(ds.classes), **kwargs)
