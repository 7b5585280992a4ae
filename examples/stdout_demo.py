"""Send a few events to the sink named by NAT_TELEMETRY_ENDPOINT and show the counters.

    NAT_TELEMETRY_ENABLED=1 NAT_TELEMETRY_ENDPOINT=stdout python examples/stdout_demo.py
"""

import platform

from nat_telemetry import CliCommandEvent, NATTelemetryHandler, config


def main() -> None:
    python_version = platform.python_version()
    with NATTelemetryHandler() as handler:
        for command, status, error_class in [
            ("run", "success", "undefined"),
            ("serve", "failure", "ValueError"),
            ("eval", "interrupted", "undefined"),
        ]:
            handler.enqueue(CliCommandEvent(
                command=command, task_status=status, error_class=error_class,
                duration_ms=12, exit_code=0 if status == "success" else 1,
                python_version=python_version,
            ))
    if not config.TELEMETRY_ENABLED:
        print("telemetry is disabled: set NAT_TELEMETRY_ENABLED=1 to see payloads")
    print(handler.stats())


if __name__ == "__main__":
    main()
