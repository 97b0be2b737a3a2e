"""Host score and energy models, registered by name in `MODELS`."""
from score_matching.registry import Registry

MODELS: Registry = Registry("model")
register_model = MODELS.register
