"""latentguard-serve: guarded answers behind the OpenAI protocol (chat and completions, streamed or not).

    latentguard-serve --model smollm2-135m-instruct --guard latent-probe --port 8000 --max-rows 16

Options mirror :class:`latentguard.serving.server.ServeConfig`; a bad option or value is one line
``error: ...`` with exit status 2. SIGINT or SIGTERM: the requests in flight finish, then it exits.
"""

from __future__ import annotations

from collections.abc import Sequence

from latentguard.cli.config_args import parse_config, run_cli
from latentguard.serving.config import ServeConfig


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point (``latentguard-serve``)."""

    def body() -> int:
        config = parse_config(ServeConfig, argv, description=__doc__.splitlines()[0])
        from latentguard.serving.server import serve  # needs starlette and uvicorn: latentguard[serve]

        serve(config)
        return 0

    return run_cli(body)


if __name__ == "__main__":
    raise SystemExit(main())
