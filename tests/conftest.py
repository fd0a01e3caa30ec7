"""Test-wide settings: tiny models train faster on one intra-op thread, and stay fast when the
machine's cores are busy (2 threads on a loaded 2-core box made batches ~30x slower)."""

import torch

torch.set_num_threads(1)
