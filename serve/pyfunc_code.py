"""The registered policy's code, as MLflow stores it ("models from code").

Loading the model runs this file instead of unpickling an object: MLflow warns at every
registration that a pickled `python_model` may execute arbitrary code when loaded.
"""

from mlflow.models import set_model

from serve.pyfunc_model import PolicyModel

set_model(PolicyModel())
