"""Every model's assets and gate checks, in one place for the Definitions."""

from assets import churn, lifecycle, segments

SPECS: list[lifecycle.ModelSpec] = [churn.SPEC, segments.SPEC]

model_assets, model_checks = [], []
for _spec in SPECS:
    _assets, _checks = lifecycle.model_assets(_spec)
    model_assets += _assets
    model_checks += _checks
