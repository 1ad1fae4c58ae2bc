"""Errors a model raises about its data rather than its code."""


class NotEnoughData(ValueError):
    """The data cannot support this model (too few customers, one class only, no usable feature): the pipeline
    skips the model with this message instead of failing the run."""


class MissingInputs(ValueError):
    """A model version's inputs are not all in today's features (a column gone, or of another type): it cannot
    score without guessing, so it does not score at all (never NaN in place of a value it was trained on)."""

    PREFIX = "inputs "  # how its message starts: ml.model_runs.scoring_note is read by it (registry.due_for_training)

    def __init__(self, columns: list[str], what: str = "missing from today's features"):
        self.columns = list(columns)
        super().__init__(f"{self.PREFIX}{what}: {', '.join(self.columns)} (deliver them again, or retrain the model)")
