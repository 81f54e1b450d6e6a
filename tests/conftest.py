"""Shared test fixtures."""

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from threads, and a busy machine makes them slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def proxy_context(space_text: str, input_size: tuple, train_subset: int, epochs: int = 1):
    """A search proxy over the digits data with an untrained resnet8 teacher and student (seeded)."""
    from autokd_dsl.data import DataConfig, load_data
    from autokd_dsl.lang.check import check_text
    from autokd_dsl.models import create_model
    from autokd_dsl.search.evaluate import ProxyContext, ProxySettings
    from autokd_dsl.search.space import SearchSpace

    torch.manual_seed(0)
    bundle = load_data(DataConfig(name="digits", input_size=input_size, train_subset=train_subset))
    teacher = create_model("resnet8", num_classes=10, in_chans=input_size[0]).eval()
    space = SearchSpace(check_text(space_text).blocks[0])
    return ProxyContext(space, teacher, "resnet8", bundle, ProxySettings(epochs=epochs), teacher_name="resnet8")
