import torch

# Tiny tensors: one thread avoids OpenMP spin-waits that dominate on a busy 2-core machine.
torch.set_num_threads(1)
