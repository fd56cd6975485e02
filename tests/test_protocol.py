"""Protocol.from_params: a notebook's parameters become its protocol in one call."""
from mmsa import experiment


def test_from_params_takes_the_protocol_fields_of_a_namespace():
    ns = {"dataset": "synth_mosi", "data_dir": "data/synth", "sizes": [120, 60, 80], "lengths": [32, 50, 50],
          "epochs": 6, "patience": 3, "seeds": [1, 2], "device": "cpu", "threads": 2, "rates": [0.0, 0.5],
          "np": object()}
    p = experiment.Protocol.from_params(ns)
    assert p == experiment.Protocol(dataset="synth_mosi", data_dir="data/synth", sizes=(120, 60, 80),
                                    lengths=(32, 50, 50), epochs=6, patience=3, seeds=(1, 2), device="cpu")
    assert experiment.Protocol.from_params({"dataset": "mosi"}).data_dir == "data/MOSI"
