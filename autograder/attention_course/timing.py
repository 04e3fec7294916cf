"""Waiting for the device in use before reading a clock, shared by the lessons' plots and the benchmarks."""

import torch


def synchronize(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
