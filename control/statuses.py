"""A job's statuses (the state machine that moves between them is control.lifecycle). A sweep ends
in the same three final statuses. No imports: the command line's client uses these too."""

STATUSES = ("validating_files", "queued", "running", "succeeded", "failed", "cancelled", "paused")
TERMINAL_STATUSES = ("succeeded", "failed", "cancelled")
ACTIVE_STATUSES = ("queued", "running")  # what a worker may claim
