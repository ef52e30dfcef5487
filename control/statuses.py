"""A job's statuses (the state machine that moves between them is control.lifecycle). A sweep ends
in the same three final statuses. No imports: the command line's client uses these too."""

STATUSES = ("validating_files", "queued", "running", "succeeded", "failed", "cancelled", "paused")
TERMINAL_STATUSES = ("succeeded", "failed", "cancelled")
ACTIVE_STATUSES = ("queued", "running")  # what a worker may claim


def sweep_status(statuses: list[str]) -> str:
    """One status for a family of jobs (a sweep's members)."""
    if all(s in ("validating_files", "queued") for s in statuses):
        return "queued"
    if any(s not in TERMINAL_STATUSES for s in statuses):
        return "running"
    if all(s == "succeeded" for s in statuses):
        return "succeeded"
    return "failed" if "failed" in statuses else "cancelled"
