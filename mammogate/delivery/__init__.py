"""Delivery: the outbox that sends result objects to destinations.

One loop (:class:`~mammogate.delivery.outbox.DeliveryLoop`) claims due deliveries and hands
each to the backend of its destination's kind through the :class:`Destination` protocol. The
backends are registered by the composition root: DICOM C-STORE lives in ``dicom_node`` (the one
package that imports pynetdicom), the HTTP ones (Orthanc REST, DICOMweb STOW-RS) here.

Errors:
    SendError -- one attempt failed; ``retryable`` says whether a later attempt may succeed.
"""

from mammogate.delivery.base import Destination, SendError, backend_for

__all__ = ["Destination", "SendError", "backend_for"]
