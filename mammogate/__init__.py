"""mammogate: a DICOM/PACS integration node for breast-cancer AI.

A research and decision-support tool, not a diagnostic device.
"""

import os

__version__ = "0.1.0"

DISCLAIMER = "mammogate: research and decision-support use only; not a diagnostic device; not for clinical use."

# TensorFlow's oneDNN kernels abort training with heap corruption ("munmap_chunk(): invalid
# pointer" inside train_on_batch) on AVX-512 BF16 CPUs with TensorFlow 2.20 and 2.21, and make
# results depend on the CPU. Set here, before anything of ours can import TensorFlow; an
# explicit TF_ENABLE_ONEDNN_OPTS in the environment wins.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
