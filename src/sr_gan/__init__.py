"""sr-gan: SRGAN and ESRGAN super-resolution with PyTorch Lightning and Hydra."""

__version__ = "0.1.0"
