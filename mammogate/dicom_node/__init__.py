"""The DICOM side of the node: SCP, association policy, spool, study settling, worker, senders.

The only package that imports pynetdicom.

Errors:
    SpoolError -- an instance cannot be made durable (disk full, permissions).
    SendError -- a result could not be delivered; ``retryable`` says whether to try again.
"""
