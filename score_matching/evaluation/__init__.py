"""Sample-quality evaluation of the image models: Fréchet distances between feature statistics.

- `frechet`: `gaussian_statistics` and `frechet_distance` (scipy.linalg.sqrtm, nothing rescaled).
- `inception`: the standard FID's TF-Inception-v3 pool3 extractor, weights from a local file only.
- `mnist_classifier`: a small MNIST CNN whose penultimate features define `mnist_classifier_fd`,
  a metric that runs without downloads and is NOT comparable to published FIDs.
- `statistics_cache`: reference statistics cached by dataset, extractor and count.
- `sample_quality`: `mnist_classifier_fd` and `inception_fid` of a set of samples.
- `image_metrics`: what an image task's evaluation computes, as configured by config.eval.

Import from the submodules (this file imports none of them, so that
`python -m score_matching.evaluation.mnist_classifier` runs its module only once).
"""
