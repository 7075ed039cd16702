"""Looking inside a trained network: layer activations (via forward hooks), penultimate features, 2-D embeddings, and their figures."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from threadpoolctl import threadpool_limits
from torch import nn

from mnist_cnn.errors import ConfigError
from mnist_cnn.mnist import CLASS_NAMES

if TYPE_CHECKING:
    from matplotlib.figure import Figure

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


# The figures import matplotlib when drawn: the evaluate command imports this module, and computing activations needs none.


def _as_numpy(values: torch.Tensor | np.ndarray) -> np.ndarray:
    return values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)


def _tiles(pictures: np.ndarray, ncols: int, title: str, style: Callable[[np.ndarray], dict[str, Any]]) -> Figure:
    """One small square per picture, ``ncols`` to a row, without axes; ``style(picture)`` gives its ``imshow`` options."""
    import matplotlib.pyplot as plt

    nrows = -(-len(pictures) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * 1.0, nrows * 1.0), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(pictures):
            ax.imshow(pictures[i], **style(pictures[i]))
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_filters(weights: torch.Tensor, ncols: int = 8, title: str = "First-layer filters") -> Figure:
    """Show convolution kernels (their first input channel), each on its own colour scale centred on 0.

    Args:
        weights: A convolution's weights ``[out, in, k, k]``, on any device.
        ncols: Kernels per row.
        title: Figure title.
    """

    def centred(kernel: np.ndarray) -> dict[str, Any]:
        limit = np.abs(kernel).max() or 1.0  # white is 0, so a weight's sign reads as its colour
        return {"cmap": "RdBu_r", "vmin": -limit, "vmax": limit}

    return _tiles(_as_numpy(weights)[:, 0], ncols, title, centred)


def plot_feature_maps(maps: torch.Tensor, ncols: int = 8, title: str = "Feature maps") -> Figure:
    """Show the channels of one image's activations.

    Args:
        maps: ``[C, H, W]``, e.g. one image's entry of :func:`collect_activations`.
        ncols: Channels per row.
        title: Figure title.
    """
    return _tiles(_as_numpy(maps), ncols, title, lambda _: {"cmap": "viridis"})


def plot_embedding(points: np.ndarray, labels: torch.Tensor | np.ndarray, title: str) -> Figure:
    """Scatter a 2-D embedding coloured by digit.

    Args:
        points: ``[N, 2]`` coordinates from :func:`embed_2d`.
        labels: ``[N]`` digit of each point.
        title: Axes title.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    labels = _as_numpy(labels)
    fig, ax = plt.subplots(figsize=(6.5, 6))
    sns.scatterplot(
        x=points[:, 0], y=points[:, 1], hue=labels.astype(str), hue_order=list(CLASS_NAMES), palette="tab10", s=6, linewidth=0, ax=ax
    )
    ax.set(title=title, xticks=[], yticks=[])
    ax.legend(title="digit", markerscale=2, bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.tight_layout()
    return fig
