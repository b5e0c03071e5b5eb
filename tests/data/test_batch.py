import pytest
import torch

from aenp.batch import Batch, GridBatch
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


@pytest.mark.parametrize(
    ("mask", "error", "match"),
    [
        (
            torch.ones(2, 3),
            TypeError,
            "context_mask must be a boolean torch.Tensor, got torch.float32",
        ),
        ([[True] * 3] * 2, TypeError, "context_mask must be a boolean torch.Tensor, got list"),
        (
            torch.ones(2, 4, dtype=torch.bool),
            ValueError,
            r"context_mask must have shape \[batch, nc\] = \[2, 3\] to match xc, got \[2, 4\]",
        ),
        (
            torch.ones(2, 3, 1, dtype=torch.bool),
            ValueError,
            r"\[batch, nc\] = \[2, 3\].*got \[2, 3, 1\]",
        ),
        (
            torch.ones(2, 3, dtype=torch.bool, device="meta"),
            TypeError,
            "context_mask is on meta but xc is on cpu",
        ),
    ],
)
def test_bad_context_masks_are_named(mask, error, match):
    with pytest.raises(error, match=match):
        Batch(*tensors(), context_mask=mask)


def test_context_mask_follows_the_batch():
    """Moving, casting, selecting and shifting keep the mask boolean and with its tasks."""
    mask = torch.tensor([[True, False, True], [False, False, False]])
    batch = Batch(*tensors(), context_mask=mask)
    assert torch.equal(batch.to(torch.float64).context_mask, mask)
    assert torch.equal(batch[1].context_mask, mask[1:2])
    assert torch.equal(batch[torch.tensor([1, 0])].context_mask, mask[[1, 0]])
    assert torch.equal(batch.shift(1.5).context_mask, mask)


def test_pad_context_pads_at_the_first_target_and_keeps_the_mask():
    xc, yc, xt, yt = tensors(nc=3, dx=2, dy=2)
    mask = torch.tensor([[True, False, True], [True, True, True]])
    padded = Batch(xc, yc, xt, yt, context_mask=mask).pad_context(5)
    assert torch.equal(padded.xc[:, :3], xc) and torch.equal(padded.yc[:, :3], yc)
    assert torch.equal(padded.xc[:, 3:], xt[:, :1].expand(-1, 2, -1))
    assert torch.equal(padded.yc[:, 3:], torch.zeros(2, 2, 2))
    assert torch.equal(padded.context_mask, torch.cat([mask, torch.zeros(2, 2, dtype=bool)], 1))
    assert torch.equal(padded.xt, xt) and torch.equal(padded.yt, yt)
    # Without a mask every existing point is real; from nc = 0 every point is padding.
    assert bool(Batch(xc, yc, xt).pad_context(4).context_mask[:, :3].all())
    assert not bool(Batch(*tensors(nc=0)).pad_context(2).context_mask.any())


def test_pad_context_refuses_to_remove_points():
    batch = Batch(*tensors(nc=3))
    with pytest.raises(ValueError, match=r"num_context \(2\) must be at least .* nc = 3"):
        batch.pad_context(2)
    with pytest.raises(TypeError, match=r"num_context must be an integer, got 4\.0"):
        batch.pad_context(4.0)


def test_concat_pads_tasks_to_a_common_context_size():
    small, large = Batch(*tensors(b=1, nc=0)), Batch(*tensors(b=2, nc=3))
    batch = Batch.concat([small, large])
    assert batch.xc.shape == (3, 3, 1)
    assert batch.context_mask.sum(1).tolist() == [0, 3, 3]
    assert torch.equal(batch.yt, torch.cat([small.yt, large.yt]))
    assert Batch.concat([small, large], num_context=6).xc.shape == (3, 6, 1)
    with pytest.raises(ValueError, match=r"same number of targets.*\(4, 1, 1, True\), \(5"):
        Batch.concat([small, Batch(*tensors(nt=5))])


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
        (
            lambda b: (b[0], b[1].to("meta"), *b[2:]),
            "context_mask is on meta but y is on cpu; every tensor of a batch must be on one",
        ),
        (lambda b: (*b[:2], b[2].to("meta"), b[3]), "target_mask is on meta but y is on cpu"),
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


@pytest.mark.parametrize(
    "where",
    [
        (torch.device("cpu"),),  # as Lightning moves a batch
        ("cpu",),
        (),
    ],
)
def test_a_grid_batch_sends_every_tensor_where_its_values_go(monkeypatch, where):
    batch = random_grid_batch(shape=(4, 5))
    batch = GridBatch(
        batch.y, batch.context_mask, batch.target_mask, batch.axes, torch.zeros(4, 5, 1)
    )
    sent = []
    to = torch.Tensor.to

    def recording(tensor, *args, **kwargs):
        sent.append((tensor.shape, torch._C._nn._parse_to(*args, **kwargs)[0]))
        return to(tensor, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", recording)
    device = {"device": torch.device("cpu")} if not where else {}
    moved = batch.to(*where, dtype=torch.float64, **device)
    monkeypatch.undo()
    # y, both masks, both axes and the extra inputs, each sent to the device.
    shapes = [batch.y.shape, (3, 4, 5), (3, 4, 5), (4,), (5,), (4, 5, 1)]
    assert sorted(sent) == sorted((torch.Size(s), torch.device("cpu")) for s in shapes)
    assert moved.y.dtype == moved.extra_inputs.dtype == torch.float64
    assert {a.dtype for a in moved.axes} == {torch.float64}
    assert moved.context_mask.dtype == moved.target_mask.dtype == torch.bool


def test_a_move_to_another_device_takes_every_tensor_and_is_not_validated_again():
    # Validating the values on the meta device would fail (they have none): on a GPU each
    # check would wait for the device.
    points = Batch(*tensors(), context_mask=torch.ones(2, 3, dtype=torch.bool))
    grid = random_grid_batch(shape=(4, 5))
    grid = GridBatch(grid.y, grid.context_mask, grid.target_mask, grid.axes, torch.zeros(4, 5, 1))
    for batch in (points, grid):
        moved = batch.to("meta")
        assert type(moved) is type(batch) and moved.device == torch.device("meta")
        for before, after in zip(flat_tensors(batch), flat_tensors(moved), strict=True):
            assert after.device == torch.device("meta")
            assert (after.shape, after.dtype) == (before.shape, before.dtype)


def flat_tensors(batch):
    """Every tensor of a batch, the axes one by one."""
    values = [getattr(batch, f) for f in batch.__dataclass_fields__]
    return [t for v in values for t in (v if isinstance(v, tuple) else [v]) if t is not None]


def test_a_cast_is_validated_again():
    xc, yc, xt, yt = (t.double() for t in tensors())
    yc[0, 0] = 1e300  # finite in float64, infinite in float32
    with pytest.raises(ValueError, match="yc contains 1 NaN or infinite value"):
        Batch(xc, yc, xt, yt).to(torch.float32)
    grid = random_grid_batch(shape=(4, 5), dtype=torch.float64)
    cell = grid.context_mask.nonzero()[0].tolist()
    grid.y[(*cell, 0)] = 1e300
    with pytest.raises(ValueError, match="y contains NaN or infinite values at 1 context"):
        grid.to(torch.float32)
