"""Send a few events to the sink named by NAT_TELEMETRY_ENDPOINT and show the counters.

    NAT_TELEMETRY_ENABLED=1 NAT_TELEMETRY_ENDPOINT=stdout python examples/stdout_demo.py
"""

import platform

from nat_telemetry import CliCommandEvent, NATTelemetryHandler, TaskStatusEnum, config


def main() -> None:
    python_version = platform.python_version()
    with NATTelemetryHandler() as handler:
        # The exit codes track_command records: 0, 1 for an exception, 130 for Ctrl-C.
        for command, status, exit_code, error_class in [
            ("run", TaskStatusEnum.SUCCESS, 0, "undefined"),
            ("serve", TaskStatusEnum.FAILURE, 1, "ValueError"),
            ("eval", TaskStatusEnum.INTERRUPTED, 130, "KeyboardInterrupt"),
        ]:
            handler.enqueue(CliCommandEvent(
                command=command, task_status=status, error_class=error_class,
                duration_ms=12, exit_code=exit_code, python_version=python_version,
            ))
    if not config.TELEMETRY_ENABLED:
        print("telemetry is disabled: set NAT_TELEMETRY_ENABLED=1 to see payloads")
    print(handler.stats())


if __name__ == "__main__":
    main()
