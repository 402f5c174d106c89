"""The refusals of verified load, in a module of their own so that integrity.py (files, self-test)
and signing.py (the trust policy) both raise them without importing each other. Callers catch them
as `integrity.IntegrityError` / `integrity.SignatureError`."""


class IntegrityError(RuntimeError):
    """An artifact whose files or self-test do not match what was exported: it is not run."""


class SignatureError(IntegrityError):
    """Refused by the trust policy: unsigned, signed by an untrusted key, or changed after signing."""
