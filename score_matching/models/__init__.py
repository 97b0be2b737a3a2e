"""Host score and energy models, registered by name in `MODELS`."""
from score_matching.registry import Registry

MODELS: Registry = Registry("model")
register_model = MODELS.register

# Importing the model modules registers them (they import `register_model` from here).
from score_matching.models import dkef, ncsn, nice, vae  # noqa: E402,F401
