"""The SCP's metrics over real associations on 127.0.0.1: what it answered Success and what it
refused, by calling AE title and reason, as ``/metrics`` reports them."""

from __future__ import annotations

from prometheus_client import REGISTRY

from tests.integration.test_scp import MG_FOR_PRESENTATION, SC, RunningScp, _dataset, _send


def _value(metric: str, /, **labels: str) -> float:
    return REGISTRY.get_sample_value(metric, labels) or 0.0


def test_each_c_store_is_counted_received_or_rejected_with_its_reason(scp: RunningScp) -> None:
    received = _value("mammogate_instances_received_total", calling_ae="MODALITY")
    not_mg = _value("mammogate_instances_rejected_total", calling_ae="MODALITY", reason="sop_class")
    no_pixels = _value("mammogate_instances_rejected_total", calling_ae="MODALITY", reason="invalid")
    accepted = _value("mammogate_associations_total", outcome="accepted")

    assert _send(scp, _dataset(MG_FOR_PRESENTATION, "MG"), MG_FOR_PRESENTATION).Status == 0x0000
    assert _send(scp, _dataset(SC, "OT"), SC).Status == 0xA900  # not a mammogram
    assert _send(scp, _dataset(MG_FOR_PRESENTATION, "MG", pixels=False),
                 MG_FOR_PRESENTATION).Status == 0xA900  # no Pixel Data

    assert _value("mammogate_instances_received_total", calling_ae="MODALITY") == received + 1
    assert _value("mammogate_instances_rejected_total", calling_ae="MODALITY",
                  reason="sop_class") == not_mg + 1
    assert _value("mammogate_instances_rejected_total", calling_ae="MODALITY",
                  reason="invalid") == no_pixels + 1
    assert _value("mammogate_associations_total", outcome="accepted") == accepted + 3
