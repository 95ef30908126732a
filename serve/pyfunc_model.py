"""The policy as an MLflow pyfunc model: what the registry holds and `tokenmdp serve --model` loads.

The model carries the policy (weights, model config, action space, the config it was trained under and
the corpus statistics the audit reads; not the optimizer) as an artifact;
`predict` continues sequences greedily, so `mlflow.pyfunc.load_model(uri).predict(...)`
works anywhere this package is installed; `load_model(uri, model_config={"precision": "bfloat16"})` answers
from bfloat16 weights, as `serve.precision` serves them.
"""

from __future__ import annotations

from pathlib import Path

import mlflow.pyfunc


class PolicyModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from serve.engine import PolicyEngine

        precision = (context.model_config or {}).get("precision", "float32")
        self.engine = PolicyEngine(Path(context.artifacts["checkpoint"]), precision=precision)

    def predict(self, context, model_input: list[list[int]], params: dict | None = None) -> list[int | None]:
        """A list of sequences (lists of ints) -> a list of next terms (None where the answer was malformed).

        The type hints are MLflow's signature: it checks the input against them before calling.
        """
        from serve.engine import Sampling

        rows = model_input.values.tolist() if hasattr(model_input, "values") else list(model_input)
        results = self.engine.continue_batch([([int(x) for x in row], 1, Sampling()) for row in rows])
        return [r.terms[0] if r.terms else None for r in results]


def register_policy(checkpoint: Path, name: str) -> str:
    """Log the checkpoint's policy as a pyfunc model in the active run and register it; returns
    `models:/name/version`. The policy alone (`models.checkpoint.save_policy`): what is fetched to serve or judge
    it, without the optimizer, buffer and RNG that only resume training."""
    import tempfile

    import mlflow

    from models.checkpoint import load_checkpoint, save_policy

    with tempfile.TemporaryDirectory() as tmp:
        policy = Path(tmp) / "policy.pt"
        model, space, state = load_checkpoint(checkpoint)
        save_policy(policy, model=model, space=space, state=state)
        info = mlflow.pyfunc.log_model(
            name="policy",
            python_model=str(Path(__file__).with_name("pyfunc_code.py")),  # code, not a pickle
            artifacts={"checkpoint": str(policy)},
            model_config={"precision": "float32"},  # what `load_model(..., model_config=...)` may override
            registered_model_name=name,
            pip_requirements=["torch", "mlflow", "pydantic"],
        )
    return f"models:/{name}/{info.registered_model_version}"
