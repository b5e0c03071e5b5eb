"""The backbone interface: what a neural process and prediction ask of a backbone, declared."""

import pytest
import torch
from torch import nn

import aenp
from aenp.batch import target_loglik
from aenp.errors import InputTypeError
from aenp.grid import Grid
from aenp.models.backbone import Backbone
from aenp.models.convcnp import ConvCNPBackbone
from aenp.models.likelihood import HeteroscedasticNormal
from aenp.models.neural_process import NeuralProcess
from aenp.nn.cnn import UNet
from aenp.nn.setconv import SetConv
from aenp.testing import random_batch, random_grid_batch

from .test_contract import SMALL_BY_KEY

CONVOLUTIONAL = {"convcnp", "equivcnp", "relaxed_convcnp"}


def small_model(key: str, dim_x: int = 2) -> NeuralProcess:
    return aenp.build_model(key, dim_x, 1, **SMALL_BY_KEY[key.removesuffix("_approx")])


@pytest.mark.parametrize("key", aenp.model_keys())
def test_exactly_the_convolutional_backbones_take_grids(key):
    backbone = small_model(key).backbone
    assert isinstance(backbone, Backbone)
    convolutional = key.removesuffix("_approx") in CONVOLUTIONAL
    assert backbone.takes_grids == backbone.exact_positions == convolutional
    if not convolutional:
        assert backbone.resolution_multiple == 1
        grid = random_grid_batch()
        with pytest.raises(InputTypeError, match="takes point sets only"):
            backbone.forward_grid(grid.context_values(), grid.context_mask, Grid(grid.axes))


def test_a_grid_needs_sides_that_are_multiples_of_the_resolution_multiple():
    model = aenp.build_model("convcnp", 2, 1, channels=4, num_layers=2).eval()
    multiple = model.backbone.resolution_multiple
    assert multiple == 4  # two stride-2 levels of the U-Net
    with torch.no_grad():
        assert model(random_grid_batch(shape=(multiple, 2 * multiple))).mean.shape == (3, 4, 8, 1)
        with pytest.raises(ValueError, match=f"must have a multiple of {multiple} cells"):
            model(random_grid_batch(shape=(multiple, multiple + 2)))


@torch.no_grad()
def test_a_point_set_backbone_predicts_a_grid_at_its_target_cells():
    """The model asks the backbone whether it takes grids; it does not look for forward_grid."""
    model = small_model("tetnp").eval()
    batch = random_grid_batch(batch_size=1, shape=(4, 4))
    pred = model(batch)
    points = model(batch.to_points())
    torch.testing.assert_close(pred.mean[batch.target_mask], points.mean.flatten(0, 1))
    assert bool((pred.mean[~batch.target_mask] == 0).all())
    assert bool((pred.stddev[~batch.target_mask] == 1).all())


class PositionDtypes(Backbone):
    """Records the dtype of the positions it is given; features are zero."""

    def __init__(self, exact_positions: bool):
        super().__init__()
        self.exact_positions = exact_positions
        self.scale = nn.Parameter(torch.ones(()))
        self.seen = []

    def forward(self, xc, yc, xt, context_mask=None):
        self.seen.append(xt.dtype)
        return self.scale * yc.new_zeros(*xt.shape[:2], 2)


@pytest.mark.parametrize("exact", [False, True])
def test_positions_stay_in_the_batch_precision_only_for_a_backbone_that_asks(exact):
    model = NeuralProcess(PositionDtypes(exact), HeteroscedasticNormal(), dim_x=1, dim_y=1)
    model(random_batch(dtype=torch.float64))
    assert model.backbone.seen == [torch.float64 if exact else torch.float32]


def test_a_neural_process_needs_a_backbone():
    with pytest.raises(TypeError, match="Backbone"):
        NeuralProcess(nn.Linear(1, 2), HeteroscedasticNormal(), dim_x=1, dim_y=1)


def test_approximate_counts_a_backbones_inputs_data_channels_included():
    """A bare ConvCNP backbone gridding one input and taking one as a channel has two."""
    backbone = ConvCNPBackbone(2, 1, UNet(1, 4, 1, 5), 4, 8, 0.1, channel_inputs=1)
    assert (backbone.position_dims, backbone.input_dims) == (1, 2)
    with pytest.raises(ValueError, match=r"per input dimension \(dim_x=2\), got 1"):
        aenp.approximate(backbone, domain=[[-1.0, 1.0]])
    aenp.approximate(backbone, domain=[[-1.0, 1.0], [None, None]])
    assert backbone.fixed_inputs.dim_x == 1


HOST_READS = ("tolist", "item", "__bool__", "__float__", "__int__")
"""What reads a tensor's values on the host: on a GPU, each waits for the device."""


@pytest.mark.parametrize("gridded", [False, True], ids=["point sets", "grids"])
@pytest.mark.parametrize("key", aenp.model_keys())
def test_a_training_step_reads_the_device_once_where_shapes_depend_on_it_and_else_never(
    key, gridded, monkeypatch
):
    # What a step reads are shapes, in one transfer: on point sets the set convolutions' grid
    # and windows; on grids, for a point-set model, the sizes of the sets. Nothing else of a
    # step (padded point sets, the loss, its gradients) waits for the device.
    model = small_model(key)
    batch = random_grid_batch(batch_size=1) if gridded else random_batch(dim_x=2).pad_context(9)
    reads = []

    def recorded(name):
        read = getattr(torch.Tensor, name)

        def recording(tensor, *args, **kwargs):
            reads.append(name)
            return read(tensor, *args, **kwargs)

        return recording

    for name in HOST_READS:
        monkeypatch.setattr(torch.Tensor, name, recorded(name))
    loss = -target_loglik(batch, model(batch)).mean()
    loss.backward()
    monkeypatch.undo()
    set_convolutions = any(isinstance(m, SetConv) for m in model.modules())
    sizes_read = set_convolutions if not gridded else not model.backbone.takes_grids
    assert reads == (["tolist"] if sizes_read else [])
