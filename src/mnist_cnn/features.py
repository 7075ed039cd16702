"""Looking inside a trained network: layer activations (via forward hooks), penultimate features, 2-D embeddings, and their figures."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from mnist_cnn.errors import ConfigError
from mnist_cnn.mnist import CLASS_NAMES

if TYPE_CHECKING:
    from matplotlib.figure import Figure

EMBEDDINGS = ("pca", "tsne")


def default_layers(model: nn.Module) -> list[str]:
    """The names of a model's convolution blocks (``conv_block_1``, ``conv_block_2``, ...), in order."""
    return [name for name, _ in model.named_children() if name.startswith("conv_block")]


def _keep(recorded: dict[str, torch.Tensor], name: str, _module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
    """A forward hook's body: keep a copy of the layer's output."""
    recorded[name] = output.detach().float().cpu()


@torch.inference_mode()
def collect_activations(model: nn.Module, images: torch.Tensor, layers: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """Run scaled ``images`` ``[N, 1, 28, 28]`` through ``model`` (in eval mode) once; forward hooks keep what ``layers`` output.

    Args:
        layers: Names from ``model.named_modules()`` (default: :func:`default_layers`); one it lacks is a :class:`ConfigError`.

    Returns:
        ``{layer name: activations [N, C, H, W] on the CPU}``, in the order of ``layers``.
    """
    modules = dict(model.named_modules())
    names = list(layers) if layers is not None else default_layers(model)
    unknown = [name for name in names if name not in modules]
    if unknown:
        raise ConfigError(f"the model has no layer(s) {', '.join(map(repr, unknown))}; it has {', '.join(n for n in modules if n)}")
    recorded: dict[str, torch.Tensor] = {}
    handles = [modules[name].register_forward_hook(partial(_keep, recorded, name)) for name in names]
    try:
        model.eval()
        model(images.to(next(model.parameters()).device))
    finally:  # hooks left behind would copy tensors on every later forward pass
        for handle in handles:
            handle.remove()
    return {name: recorded[name] for name in names}


@torch.inference_mode()
def extract_features(model: nn.Module, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """The penultimate features ``[N, D]`` (``model.features(x)``, the last layer's input) of scaled ``images``, in batches, on the CPU."""
    if not hasattr(model, "features"):
        raise ConfigError(f"{type(model).__name__} has no features() method to read penultimate features from")
    model.eval()
    device = next(model.parameters()).device
    chunks = [model.features(images[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(images), batch_size)]
    return torch.cat(chunks) if chunks else torch.empty(0)


def embed_2d(features: torch.Tensor | np.ndarray, method: str = "pca", seed: int = 0, tsne_iterations: int = 500) -> np.ndarray:
    """Project ``[N, D]`` features to ``[N, 2]`` with scikit-learn, for a scatter plot; ``seed`` keeps the picture the same.

    Args:
        method: ``"pca"`` (linear, fast, keeps global distances) or ``"tsne"`` (keeps neighbourhoods; subsample first).
        tsne_iterations: 500 rather than scikit-learn's 1,000 halves the time; a trained network's clusters are settled by then.
    """
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    if method not in EMBEDDINGS:
        raise ConfigError(f"unknown embedding {method!r}: choose one of {', '.join(EMBEDDINGS)}")
    values = np.asarray(features, dtype=np.float32)
    if method == "pca":
        return PCA(n_components=2, random_state=seed).fit_transform(values)
    if values.shape[1] > 50 and len(values) > 50:  # t-SNE's usual speed-up: 50 dimensions keep almost all the structure
        values = PCA(n_components=50, random_state=seed).fit_transform(values)
    perplexity = min(30.0, max(1.0, (len(values) - 1) / 3))
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto", max_iter=tsne_iterations, random_state=seed)
    # One OpenMP thread: after torch has run, scikit-learn's OpenMP runtime competes with torch's (on a busy 2-core
    # machine 2,000 points took 26 s with two threads, 11 s with one), and one thread gives the same picture everywhere.
    with threadpool_limits(limits=1, user_api="openmp"):
        return tsne.fit_transform(values)


def nearest_centroid_accuracy(points: np.ndarray, labels: torch.Tensor | np.ndarray) -> float:
    """How well classes separate in an embedding: the share of points nearer their own class's centroid than any other.

    1 when every point is closest to its own class's mean, about ``1 / classes`` when the classes are mixed at random.
    """
    from sklearn.neighbors import NearestCentroid

    points, labels = np.asarray(points, dtype=np.float64), np.asarray(labels)
    return float(NearestCentroid().fit(points, labels).score(points, labels))


# The figures import matplotlib when drawn: the evaluate command imports this module, and activations need none.


def _tiles(pictures: np.ndarray, ncols: int, title: str, style: dict[str, Any] | None = None) -> Figure:
    """One small square per picture, ``ncols`` to a row, without axes; each on its own scale centred on 0 without ``style``."""
    import matplotlib.pyplot as plt

    nrows = -(-len(pictures) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * 1.0, nrows * 1.0), squeeze=False)
    for ax, picture in zip(axes.flat, pictures, strict=False):
        limit = np.abs(picture).max() or 1.0  # white is 0, so a weight's sign reads as its colour
        ax.imshow(picture, **(style or {"cmap": "RdBu_r", "vmin": -limit, "vmax": limit}))
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_filters(weights: torch.Tensor, ncols: int = 8, title: str = "First-layer filters") -> Figure:
    """Show a convolution's kernels ``[out, in, k, k]`` (their first input channel), each on its own colour scale centred on 0."""
    return _tiles(weights.detach().cpu().numpy()[:, 0], ncols, title)


def plot_feature_maps(maps: torch.Tensor, ncols: int = 8, title: str = "Feature maps") -> Figure:
    """Show the channels of one image's activations ``[C, H, W]`` (one image's entry of :func:`collect_activations`)."""
    return _tiles(maps.detach().cpu().numpy(), ncols, title, {"cmap": "viridis"})


def plot_embedding(points: np.ndarray, labels: torch.Tensor | np.ndarray, title: str) -> Figure:
    """Scatter a 2-D embedding ``[N, 2]`` (from :func:`embed_2d`) coloured by each point's digit."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(6.5, 6))
    hue = np.asarray(labels).astype(str)
    sns.scatterplot(x=points[:, 0], y=points[:, 1], hue=hue, hue_order=list(CLASS_NAMES), palette="tab10", s=6, linewidth=0, ax=ax)
    ax.set(title=title, xticks=[], yticks=[])
    ax.legend(title="digit", markerscale=2, bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.tight_layout()
    return fig
