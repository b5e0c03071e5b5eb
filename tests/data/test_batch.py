import pytest
import torch

from aenp.data.batch import Batch, GridBatch
from aenp.testing import random_grid_batch


def tensors(b=2, nc=3, nt=4, dx=1, dy=1):
    return (
        torch.randn(b, nc, dx),
        torch.randn(b, nc, dy),
        torch.randn(b, nt, dx),
        torch.randn(b, nt, dy),
    )


def test_valid_batch_and_its_properties():
    batch = Batch(*tensors(dx=2, dy=3))
    assert (batch.dim_x, batch.dim_y, len(batch)) == (2, 3, 2)
    assert len(batch[1]) == 1 and torch.equal(batch[1].xc, batch.xc[1:2])
    torch.testing.assert_close(batch.shift(2.5).xt, batch.xt + 2.5)
    assert batch.to(torch.float64).yt.dtype == torch.float64


def test_empty_context_is_valid():
    xc, yc, xt, yt = tensors(nc=0)
    assert Batch(xc, yc, xt, yt).xc.shape == (2, 0, 1)


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        (lambda t: (t[0][:, :, 0], *t[1:]), ValueError, r"xc must have shape \[batch, n, d\]"),
        (lambda t: (t[0], t[1][:1], *t[2:]), ValueError, r"batch size of yc \(1\) does not match"),
        (lambda t: (t[0], t[1][:, :2], *t[2:]), ValueError, "xc has 3 context points but yc has 2"),
        (
            lambda t: (t[0], t[1], torch.randn(2, 4, 2), t[3]),
            ValueError,
            "xt has input dimension 2",
        ),
        (
            lambda t: (t[0], t[1], t[2], t[3][:, :3]),
            ValueError,
            "xt has 4 target points but yt has 3",
        ),
        (
            lambda t: (t[0], t[1], t[2], torch.randn(2, 4, 2)),
            ValueError,
            "yt has output dimension 2",
        ),
        (lambda t: (t[0], t[1], t[2][:, :0], t[3][:, :0]), ValueError, r"nt >= 1"),
        (lambda t: (t[0].fill_(float("inf")), *t[1:]), ValueError, "xc contains 6 NaN or infinite"),
        (lambda t: (t[0], t[1].long(), *t[2:]), TypeError, "yc must be a floating-point tensor"),
        (lambda t: (t[0], t[1].double(), *t[2:]), TypeError, "yc is torch.float64"),
        (lambda t: (t[0].numpy(), *t[1:]), TypeError, "xc must be a torch.Tensor, got ndarray"),
        (lambda t: (t[0], None, *t[2:]), TypeError, "yc is required"),
    ],
)
def test_bad_batches_are_named(change, error, match):
    with pytest.raises(error, match=match):
        Batch(*change(tensors()))


def test_nan_outside_the_masks_is_allowed_but_not_inside():
    batch = random_grid_batch(shape=(4, 5))
    unused = ~(batch.context_mask | batch.target_mask)
    assert bool(unused.any()) and bool(batch.y[unused].isnan().all())
    for mask, task, value in (
        (batch.context_mask, 1, torch.nan),
        (batch.target_mask, 2, torch.inf),
    ):
        y = batch.y.clone()
        row, col = mask[task].nonzero()[0]
        y[task, row, col] = value
        with pytest.raises(
            ValueError, match=rf"at 1 context or target cell\(s\), in task\(s\) \[{task}\]"
        ):
            GridBatch(y, batch.context_mask, batch.target_mask, batch.axes)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (
            lambda b: (b[0].long(), *b[1:]),
            "y must be a floating-point torch.Tensor, got torch.int64",
        ),
        (
            lambda b: (*b[:3], (torch.arange(4), b[3][1])),
            r"axis 0 is torch.int64 on cpu but y is torch.float32 on cpu.*\.to\(y\)",
        ),
        (lambda b: (*b[:3], (b[3][0], b[3][1].double())), "axis 1 is torch.float64"),
        (lambda b: (*b[:3], (b[3][0], b[3][1].numpy())), "axis 1 must be a torch.Tensor"),
        (
            lambda b: (*b[:4], torch.zeros(4, 5, 1, dtype=torch.float64)),
            "extra_inputs is torch.float64",
        ),
    ],
)
def test_grid_tensors_of_another_type_are_named(change, match):
    batch = random_grid_batch(shape=(4, 5))
    fields = (batch.y, batch.context_mask, batch.target_mask, batch.axes)
    with pytest.raises(TypeError, match=match):
        GridBatch(*change(fields))


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (
            lambda b: (*b[:3], b[3][:1]),
            r"y has shape \(3, 4, 5, 1\), i\.e\. 2 spatial dimension\(s\), "
            r"but 1 coordinate axes were given",
        ),
        (
            lambda b: (*b[:3], (b[3][0][:3], b[3][1])),
            r"axis 0 has shape \(3,\), expected \(4,\) to match y",
        ),
        (
            lambda b: (*b[:3], (b[3][0], b[3][1][:, None])),
            r"axis 1 has shape \(5, 1\), expected \(5,\) to match y",
        ),
        (
            lambda b: (*b[:3], (b[3][0], b[3][1].flip(0))),
            "axis 1 must be increasing and evenly spaced",
        ),
    ],
)
def test_grid_axes_of_the_wrong_shape_are_named(change, match):
    batch = random_grid_batch(shape=(4, 5))
    fields = (batch.y, batch.context_mask, batch.target_mask, batch.axes)
    with pytest.raises(ValueError, match=match):
        GridBatch(*change(fields))
