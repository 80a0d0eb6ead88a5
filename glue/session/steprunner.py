"""Run a step to its end: for the hub (the embedded default) and the pod's sidecar (Kubernetes).

Apart from glue.session.steps so that the steps themselves never import asyncio.
"""

from __future__ import annotations

import asyncio


class StepFailed(RuntimeError):
    """A step exited non-zero; the message is its own sentence."""


async def run_step(
    argv: list[str], env: dict[str, str], seconds: float, what: str
) -> str:
    """Run one step to its end; its stdout, or StepFailed with its last error line."""
    process = await asyncio.create_subprocess_exec(
        *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), seconds)
    except BaseException as e:
        # timed out, or the launch was interrupted (cancelled): the step ends with it
        if process.returncode is None:
            process.kill()
            await process.wait()
        if isinstance(e, TimeoutError):
            raise StepFailed(f"{what} took longer than {seconds:.0f} s.") from None
        raise
    if process.returncode:
        lines = stderr.decode(errors="replace").strip().splitlines()
        raise StepFailed(lines[-1] if lines else f"{what} failed.")
    return stdout.decode(errors="replace")
