"""Looking inside a trained network: layer activations (via forward hooks), penultimate features, 2-D embeddings."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from threadpoolctl import threadpool_limits
from torch import nn

from mnist_cnn.errors import ConfigError

EMBEDDINGS = ("pca", "tsne")


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def default_layers(model: nn.Module) -> list[str]:
    """The names of a model's convolution blocks (``conv_block_1``, ``conv_block_2``, ...), in order."""
    return [name for name, _ in model.named_children() if name.startswith("conv_block")]


@torch.inference_mode()
def collect_activations(model: nn.Module, images: torch.Tensor, layers: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """Run ``images`` through ``model`` once and keep what the named layers output.

    Forward hooks record the outputs, so this works for any model without changing its ``forward``.

    Args:
        model: A network (put in eval mode here).
        images: A batch already scaled as the model expects, ``[N, 1, 28, 28]``.
        layers: Names from ``model.named_modules()`` (default: :func:`default_layers`).

    Returns:
        ``{layer name: activations [N, C, H, W] on the CPU}`` in the order of ``layers``.

    Raises:
        ConfigError: A layer name the model does not have.
    """
    modules = dict(model.named_modules())
    names = list(layers) if layers is not None else default_layers(model)
    unknown = [name for name in names if name not in modules]
    if unknown:
        raise ConfigError(f"the model has no layer(s) {', '.join(map(repr, unknown))}; it has {', '.join(n for n in modules if n)}")
    recorded: dict[str, torch.Tensor] = {}

    def keep(name: str):
        def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
            recorded[name] = output.detach().float().cpu()

        return hook

    handles = [modules[name].register_forward_hook(keep(name)) for name in names]
    try:
        model.eval()
        model(images.to(_device_of(model)))
    finally:
        # Hooks left behind would keep copying tensors on every later forward pass.
        for handle in handles:
            handle.remove()
    return {name: recorded[name] for name in names}


@torch.inference_mode()
def extract_features(model: nn.Module, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """The model's penultimate features (``model.features(x)``, the last layer's input), in batches.

    Args:
        model: A network with a ``features`` method (``VGG`` and ``SmallCNN`` have one).
        images: Scaled inputs ``[N, 1, 28, 28]``.
        batch_size: Images per forward pass.

    Returns:
        ``[N, D]`` float features on the CPU.
    """
    if not hasattr(model, "features"):
        raise ConfigError(f"{type(model).__name__} has no features() method to read penultimate features from")
    model.eval()
    device = _device_of(model)
    chunks = [model.features(images[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(images), batch_size)]
    return torch.cat(chunks) if chunks else torch.empty(0)


def embed_2d(features: torch.Tensor | np.ndarray, method: str = "pca", seed: int = 0, tsne_iterations: int = 500) -> np.ndarray:
    """Project features to 2-D with scikit-learn, for a scatter plot.

    Args:
        features: ``[N, D]``.
        method: ``"pca"`` (linear, fast, keeps global distances) or ``"tsne"`` (non-linear, keeps
            neighbourhoods; seconds per thousand points, so subsample first).
        seed: Random state, so the picture is the same each run.
        tsne_iterations: t-SNE optimisation steps. 500 rather than scikit-learn's 1,000 halves the time,
            and the clusters of a trained network's features are already settled by then.

    Returns:
        ``[N, 2]`` coordinates.
    """
    if method not in EMBEDDINGS:
        raise ConfigError(f"unknown embedding {method!r}: choose one of {', '.join(EMBEDDINGS)}")
    values = features.numpy() if isinstance(features, torch.Tensor) else np.asarray(features)
    values = values.astype(np.float32)
    if method == "pca":
        return PCA(n_components=2, random_state=seed).fit_transform(values)
    # t-SNE's usual speed-up: reduce to 50 dimensions with PCA first, which keeps almost all the structure.
    if values.shape[1] > 50 and len(values) > 50:
        values = PCA(n_components=50, random_state=seed).fit_transform(values)
    perplexity = min(30.0, max(1.0, (len(values) - 1) / 3))
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto", max_iter=tsne_iterations, random_state=seed)
    # One OpenMP thread: after torch has run, scikit-learn's own OpenMP runtime competes with torch's, and on
    # a busy 2-core machine 2,000 points took 26 s with two threads against 11 s with one. One thread also
    # gives the same picture on every machine.
    with threadpool_limits(limits=1, user_api="openmp"):
        return tsne.fit_transform(values)


def nearest_centroid_accuracy(points: np.ndarray, labels: torch.Tensor | np.ndarray) -> float:
    """How well groups separate in an embedding: the share of points nearer to their own class's centroid than to any other.

    Args:
        points: ``[N, D]`` coordinates (e.g. a 2-D embedding from :func:`embed_2d`).
        labels: ``[N]`` class of each point.

    Returns:
        A fraction in [0, 1]: 1 when every point is closest to its own class's mean, about ``1 / classes``
        when the classes are mixed at random.
    """
    points = np.asarray(points, dtype=np.float64)
    labels = labels.numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    classes = np.unique(labels)
    centroids = np.stack([points[labels == c].mean(axis=0) for c in classes])
    nearest = classes[np.linalg.norm(points[:, None, :] - centroids[None], axis=2).argmin(axis=1)]
    return float((nearest == labels).mean())
