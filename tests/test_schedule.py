import pytest

from restyle.errors import InputError
from restyle.optimiser.schedule import pyramid, scale_sizes


@pytest.mark.parametrize(
    "size, scales, expected",
    [
        (512, None, (256, 512)),
        (1024, None, (256, 512, 1024)),
        (2048, None, (256, 512, 1024, 2048)),
        (300, None, (300,)),
        (64, None, (64,)),
        (512, (1,), (512,)),
        (512, (3,), (128, 256, 512)),
        (512, (200, 400), (200, 400, 512)),
        (512, (256, 512), (256, 512)),
    ],
)
def test_scale_sizes(size, scales, expected):
    assert scale_sizes(size, scales) == expected


@pytest.mark.parametrize("scales, words", [((400, 200), "ascending"), ((256, 1024), "exceed"), ((16, 512), "at least")])
def test_bad_scales(scales, words):
    with pytest.raises(InputError, match=words):
        scale_sizes(512, scales)


def test_pyramid_spends_fewer_iterations_at_larger_scales():
    stages = pyramid(2048, 400)
    assert [s.long_side for s in stages] == [256, 512, 1024, 2048]
    assert stages[0].iterations == 400
    its = [s.iterations for s in stages]
    assert its == sorted(its, reverse=True) and its[-1] >= 1


def test_single_scale_uses_exactly_the_iterations():
    (stage,) = pyramid(512, 1000, (1,))
    assert stage.long_side == 512 and stage.iterations == 1000
