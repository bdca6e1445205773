"""What the process-tuning tests need to know about this machine."""

from __future__ import annotations

import os
import resource


def may_lower_niceness() -> bool:
    """Root (CAP_SYS_NICE), or an RLIMIT_NICE that allows niceness 0 (20 - 0)."""
    return os.geteuid() == 0 or resource.getrlimit(resource.RLIMIT_NICE)[0] >= 20
