"""Errors a model raises about its data rather than its code."""


class NotEnoughData(ValueError):
    """The data cannot support this model (too few customers, one class only, no usable feature): the pipeline
    skips the model with this message instead of failing the run."""
