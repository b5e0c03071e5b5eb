import pytest

from aenp.errors import InputError
from aenp.nn.relaxed_conv import RelaxedConv


@pytest.mark.parametrize("num_banks", [0, -2])
def test_fewer_than_one_bank_is_refused_by_name(num_banks):
    with pytest.raises(InputError, match=rf"num_banks must be at least 1, got {num_banks}$"):
        RelaxedConv(dim=1, in_channels=2, out_channels=2, kernel_size=3, num_banks=num_banks)
