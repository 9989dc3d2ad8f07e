"""latentguard-serve: guarded answers behind the OpenAI protocol (chat and completions, streamed or not).

    latentguard-serve --model smollm2-135m-instruct --guard latent-probe --port 8000 --max-rows 16

Options mirror :class:`latentguard.serving.server.ServeConfig`; a bad option or value is one line
``error: ...`` with exit status 2. SIGINT or SIGTERM: the requests in flight finish, then it exits.
"""

from __future__ import annotations

from collections.abc import Sequence

from latentguard.cli.config_args import parse_config, run_cli


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point (``latentguard-serve``)."""

    def body() -> int:
        from latentguard.serving.server import ServeConfig, serve

        serve(parse_config(ServeConfig, argv, description=__doc__.splitlines()[0]))
        return 0

    return run_cli(body)


if __name__ == "__main__":
    raise SystemExit(main())
