import os

import pytest
import torch

import dgmn_mm  # noqa: F401  (registers everything)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
