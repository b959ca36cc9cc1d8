"""MLflow tracking, the one scoring model (pyfunc) and its registry: champion and challenger aliases, the gate."""
