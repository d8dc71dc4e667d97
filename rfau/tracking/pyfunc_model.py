"""MLflow "model from code": the served model, rebuilt from safetensors + model card.

MLflow loads this file as code (no pickle of the wrapper or of torch modules). Input: float32
images (N, C, H, W) in [0, 1]; output: class probabilities (N, classes).
"""

import mlflow
from mlflow.pyfunc import PythonModel


class RfauClassifier(PythonModel):
    def load_context(self, context):
        from rfau.models.checkpoint import load_checkpoint

        self.model, self.card = load_checkpoint(context.artifacts["model_dir"])

    def predict(self, context, model_input, params=None):
        import numpy as np
        import torch

        x = torch.as_tensor(np.asarray(model_input, dtype=np.float32))
        with torch.no_grad():
            return self.model(x).softmax(1).numpy()


mlflow.models.set_model(RfauClassifier())
