"""Typed errors with stable codes; every interface shows ``code`` and ``message``."""

from __future__ import annotations


class FacewardenError(Exception):
    """Base error. ``code`` is stable and machine-readable; ``message`` is for people."""

    code = "error"
    exit_code = 1

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code


class NotInitialised(FacewardenError):
    code = "not_initialised"


class NotFound(FacewardenError):
    """The input names something that does not exist (a case, a user, a media id)."""

    code = "not_found"
    exit_code = 2


class InvalidInput(FacewardenError):
    code = "invalid_input"
    exit_code = 2


class Refused(FacewardenError):
    """A rule of lawful use forbids the operation (it was logged as refused)."""

    code = "refused"
    exit_code = 3


class PermissionDenied(Refused):
    code = "permission_denied"


class Unauthenticated(PermissionDenied):
    """No valid credential: an unknown, revoked or expired token, a disabled user, a
    session that ended. ``code`` says which (``unauthenticated``, ``token_expired``)."""

    code = "unauthenticated"


class MediaError(FacewardenError):
    """One input file cannot be used; reported per file, never stops a batch."""

    code = "bad_media"
    exit_code = 2


class NoFaceFound(FacewardenError):
    code = "no_face"
    exit_code = 2


class AuditFailure(FacewardenError):
    """The audit record could not be written, so the operation did not happen."""

    code = "audit_failure"


class ConfigurationError(FacewardenError):
    """The configuration is incomplete for the requested mode (e.g. production)."""

    code = "configuration"
    exit_code = 2


class RetryLater(FacewardenError):
    """Refused for now: try again after ``retry_after`` seconds (the API's ``Retry-After``)."""

    default_retry_after = 2

    def __init__(
        self, message: str, *, retry_after: int | None = None, code: str | None = None
    ) -> None:
        super().__init__(message, code=code)
        self.retry_after = self.default_retry_after if retry_after is None else retry_after


class Busy(RetryLater):
    """Every worker is busy and the queue is full."""

    code = "busy"


class Throttled(RetryLater):
    """The caller has too much in progress already (a per-user limit, such as upload jobs)."""

    code = "throttled"
    exit_code = 3
    default_retry_after = 30


class DecryptionFailed(FacewardenError):
    """An encrypted value names a key this process holds, yet does not decrypt: it was
    altered (or moved to another record)."""

    code = "decryption_failed"


class StorageFull(FacewardenError):
    """A write failed because the disk is full or the file system refused it (nothing was
    half written; the operation can be re-run once space is freed)."""

    code = "storage_full"


class TemplateSpaceMismatch(ConfigurationError):
    """The gallery holds templates of another recipe (model, alignment, flip averaging) than
    this process makes: searching would silently miss them, enrolling would mix them."""

    code = "template_space_mismatch"
    exit_code = 3
