import math

import pytest

import methods


def test_available_lists_every_method():
    assert methods.available() == ["ddmd", "di", "dmd", "dmd2", "fdistill", "msd", "rcm", "scm", "sid", "sida",
                                    "sim", "snoopi", "tdm", "uni_instruct"]


def test_unknown_method_names_close_matches():
    with pytest.raises(ValueError, match="sim"):
        methods.create("simm")


@pytest.mark.parametrize("name,hparams,word", [
    ("sid", {"alpha": -1.0}, "alpha"),
    ("sid", {"alpha": math.nan}, "alpha"),
    ("sim", {"huber_c": 0.0}, "huber_c"),
    ("sim", {"huber_c": -1.0}, "huber_c"),
    ("sim", {"distance": "l3"}, "distance"),
    ("sim", {"bogus": 1}, "bogus"),
    ("dmd2", {"fake_updates_per_generator_update": 0}, "fake_updates_per_generator_update"),
    ("dmd", {"regression_weight": -0.1}, "regression_weight"),
    ("di", {"weighting": "snr"}, "weighting"),
    ("fdistill", {"divergence": "kl2"}, "divergence"),
    ("sida", {"gan_weight": -1.0}, "gan_weight"),
    ("uni_instruct", {"gan_start_kimg": math.inf}, "gan_start_kimg"),
])
def test_invalid_hyperparameters_are_named(name, hparams, word):
    with pytest.raises(ValueError, match=word):
        methods.create(name, **hparams)


def test_defaults_are_published():
    assert methods.create("sid").alpha == 1.2
    sim = methods.create("sim")
    assert sim.distance == "pseudo_huber" and sim.training_recipe.sigma_init == 2.5
    assert methods.create("di").training_recipe.sigma_init == 1.0
    dmd2 = methods.create("dmd2").training_recipe
    assert dmd2.fake_updates_per_generator_update == 5 and dmd2.sigma_init == 80.0
    assert methods.create("dmd").regression_weight == 0.25
