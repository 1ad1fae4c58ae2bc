"""Model code: functions that take frames and arrays and return results, testable without Dagster."""

import os

# OpenMP threads (XGBoost's, scikit-learn's) that wait at a barrier sleep instead of spinning. Spinning burns a
# core for nothing whenever the machine has other work (another step, a second run, the webserver): on this
# project's 2-core machine the test suite's model runs took 15% more CPU for the same fits
# (benchmarks/RESULTS.md). Set before the first model library loads OpenMP, which reads it once; a value set by
# the user is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
