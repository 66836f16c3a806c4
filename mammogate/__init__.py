"""mammogate: a DICOM/PACS integration node for breast-cancer AI.

A research and decision-support tool, not a diagnostic device.
"""

__version__ = "0.1.0"

DISCLAIMER = "mammogate: research and decision-support use only; not a diagnostic device; not for clinical use."
