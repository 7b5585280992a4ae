"""Placeholder: consent is being written."""
import enum
class ConsentState(str, enum.Enum):
    ENABLED = "enabled"
    DISABLED = "disabled"
    NEVER_ASKED = "never_asked"
def resolve_initial_consent() -> bool:
    return False
def maybe_prompt_for_consent() -> None:
    pass
