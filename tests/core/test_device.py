import pytest
import torch

from metalab.core.device import DEVICE_CHOICES_HELP, describe_device, resolve_device
from metalab.core.errors import DeviceError, MetalabError


@pytest.fixture
def no_cuda(monkeypatch):
    """A machine without CUDA, whatever machine the tests run on."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


@pytest.fixture
def two_gpus(monkeypatch):
    """A fake machine with two CUDA devices whose current device is cuda:1."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)


@pytest.mark.parametrize("spec", ["auto", None, "AUTO", " auto "])
def test_auto_is_cpu_without_cuda(no_cuda, spec):
    assert resolve_device(spec) == torch.device("cpu")


@pytest.mark.parametrize("spec", ["cpu", "CPU", "  cpu\n", torch.device("cpu")])
def test_cpu_spellings(no_cuda, spec):
    device = resolve_device(spec)
    assert device == torch.device("cpu")
    assert device.type == "cpu"


@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "cuda:3", torch.device("cuda", 0)])
def test_cuda_without_cuda_is_an_error_not_a_fallback(no_cuda, spec):
    with pytest.raises(DeviceError, match="CUDA is not available"):
        resolve_device(spec)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_real_machine_without_cuda_refuses_cuda():
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(DeviceError):
        resolve_device("cuda")


@pytest.mark.parametrize(
    "spec",
    [
        "gpu",
        "cuda:",
        "cuda:x",
        "cuda:-1",
        "cuda:0:1",
        "cuda0",
        "cpu:1",
        "cpu:0",
        "auto:0",
        "mps",
        "  ",
        "cud",
    ],
)
def test_malformed_specs(no_cuda, spec):
    with pytest.raises(DeviceError) as info:
        resolve_device(spec)
    assert "invalid device" in str(info.value)
    assert DEVICE_CHOICES_HELP in str(info.value)


def test_device_error_is_a_metalab_error(no_cuda):
    with pytest.raises(MetalabError):
        resolve_device("tpu")


def test_malformed_spec_is_refused_even_with_cuda(two_gpus):
    with pytest.raises(DeviceError, match="invalid device"):
        resolve_device("cpu:1")


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("auto", torch.device("cuda", 1)),
        (None, torch.device("cuda", 1)),
        ("cuda", torch.device("cuda", 1)),
        ("cuda:0", torch.device("cuda", 0)),
        ("CUDA:1", torch.device("cuda", 1)),
        (torch.device("cuda", 0), torch.device("cuda", 0)),
        ("cpu", torch.device("cpu")),
    ],
)
def test_cuda_branches(two_gpus, spec, expected):
    assert resolve_device(spec) == expected


@pytest.mark.parametrize("spec", ["cuda:2", "cuda:7", "cuda:10"])
def test_cuda_ordinal_out_of_range(two_gpus, spec):
    with pytest.raises(DeviceError, match=r"has 2 CUDA device\(s\)"):
        resolve_device(spec)


def test_cuda_current_device_out_of_range(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    with pytest.raises(DeviceError):
        resolve_device("cuda")


def test_describe_cpu():
    text = describe_device(torch.device("cpu"))
    assert text == f"cpu ({torch.get_num_threads()} threads)"


def test_describe_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: "Fake GPU")
    assert describe_device(torch.device("cuda", 1)) == "cuda:1 (Fake GPU)"
