"""The host codebase: score models, losses, data, sampling, evaluation and the train/eval loop.

Nothing in this package knows about DEQ layers; `patches/` applies `deq_plugin` to the models here.
"""
