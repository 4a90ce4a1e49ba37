"""The ``bridge`` command line."""

from __future__ import annotations

import errno
import logging
import socket
import sys

import click

from bridge.index.cli import register as register_index_commands
from bridge.model.options import (
    CPU_BATCH_TOKENS,
    DEFAULT_MAX_INPUT_TOKENS,
    GPU_BATCH_TOKENS,
    ServiceOptions,
    default_of,
)
from bridge.nodes.cli import engine
from bridge.plugin.cli import plugin
from bridge.server.settings import ServerSettings


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="embedding-bridge")
def main() -> None:
    """The embedding bridge: Qwen3-Embedding on your GPU, wired into Elasticsearch and OpenSearch.

    The options of serve and the connection options (--engine-url, --bridge-url, keys,
    TLS, --retry-for) can also be set as environment variables named BRIDGE_<OPTION> (for
    example BRIDGE_MODEL, BRIDGE_PORT, BRIDGE_ENGINE_URL, BRIDGE_BRIDGE_URL); each
    command's --help names the variables of its options ([env var: ...]).
    """


@main.command()
@click.option(
    "--model",
    envvar="BRIDGE_MODEL",
    default=default_of(ServiceOptions, "model"),
    show_default=True,
    help="Hugging Face hub id, local directory, or the alias 'minilm' (offline, CPU).",
)
@click.option(
    "--revision",
    envvar="BRIDGE_REVISION",
    default=None,
    help="Hub revision (branch, tag or commit) to download.",
)
@click.option(
    "--host",
    envvar="BRIDGE_HOST",
    default="127.0.0.1",
    show_default=True,
    help="Address to bind; 0.0.0.0 exposes the service to the network.",
)
@click.option("--port", envvar="BRIDGE_PORT", default=8000, show_default=True, type=int)
@click.option(
    "--device",
    envvar="BRIDGE_DEVICE",
    default=default_of(ServiceOptions, "device"),
    show_default=True,
    help="auto, cpu, cuda (every visible GPU, one worker each), cuda:N, or a list "
    "such as cuda:0,cuda:1.",
)
@click.option(
    "--dtype",
    envvar="BRIDGE_DTYPE",
    default=default_of(ServiceOptions, "dtype"),
    show_default=True,
    type=click.Choice(["auto", "float32", "bfloat16", "float16"]),
    help="auto is bfloat16 on CUDA and float32 on CPU.",
)
@click.option(
    "--max-batch-tokens",
    envvar="BRIDGE_MAX_BATCH_TOKENS",
    default=None,
    type=click.IntRange(min=1),
    help="Token budget of one model batch: real tokens with Qwen3's padding-free forward "
    f"on CUDA, padded tokens otherwise [default: {GPU_BATCH_TOKENS} on CUDA, "
    f"{CPU_BATCH_TOKENS} on CPU].",
)
@click.option(
    "--max-input-tokens",
    envvar="BRIDGE_MAX_INPUT_TOKENS",
    default=None,
    type=click.IntRange(min=2),
    help=f"Longest input in tokens [default: {DEFAULT_MAX_INPUT_TOKENS}, capped at the "
    "model's own limit].",
)
@click.option(
    "--max-queue-tokens",
    envvar="BRIDGE_MAX_QUEUE_TOKENS",
    default=None,
    type=click.IntRange(min=1),
    help="Tokens allowed to wait; beyond it requests get 429 [default: --queue-seconds of "
    "work at the throughput measured at start-up].",
)
@click.option(
    "--queue-seconds",
    envvar="BRIDGE_QUEUE_SECONDS",
    default=default_of(ServiceOptions, "queue_seconds"),
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="Default queue bound in seconds of work: a 429 means a real backlog; its "
    "Retry-After is the backlog's time at the same rate.",
)
@click.option(
    "--shutdown-grace",
    envvar="BRIDGE_SHUTDOWN_GRACE",
    default=default_of(ServerSettings, "shutdown_grace"),
    show_default=True,
    type=click.FloatRange(min=0),
    help="On SIGTERM: /ready turns 503, new requests get 503, in-flight work finishes for "
    "up to this many seconds, then exit 0 (a second signal stops at once).",
)
@click.option(
    "--max-inputs",
    envvar="BRIDGE_MAX_INPUTS",
    default=default_of(ServerSettings, "max_inputs_per_request"),
    show_default=True,
    type=click.IntRange(min=1),
    help="Most inputs in one request (413 beyond).",
)
@click.option(
    "--max-request-bytes",
    envvar="BRIDGE_MAX_REQUEST_BYTES",
    default=default_of(ServerSettings, "max_request_bytes"),
    show_default=True,
    type=click.IntRange(min=1024),
    help="Largest request body (413 beyond).",
)
@click.option(
    "--compile",
    "compile_model",
    envvar="BRIDGE_COMPILE",
    is_flag=True,
    help="torch.compile the model: faster on GPUs, minutes of compilation before /ready.",
)
@click.option(
    "--cuda-graphs/--no-cuda-graphs",
    envvar="BRIDGE_CUDA_GRAPHS",
    default=default_of(ServiceOptions, "cuda_graphs"),
    show_default=True,
    help="On a GPU, capture CUDA graphs for batches of up to 2,048 tokens at start-up "
    "(short queries skip the Python kernel-launch overhead; Qwen3 models).",
)
@click.option(
    "--fused-kernels/--no-fused-kernels",
    envvar="BRIDGE_FUSED_KERNELS",
    default=default_of(ServiceOptions, "fused_kernels"),
    show_default=True,
    help="On a GPU, run the elementwise steps of Qwen3's padding-free forward (add + "
    "RMSNorm, q/k norm + rotary, SiLU·mul) as fused Triton kernels, and its attention "
    "with our Triton kernel for texts of up to 8,192 tokens (else flash attention); on "
    "Hopper, a batch of 1,024 tokens or more also runs SiLU·mul inside its gate/up GEMM.",
)
@click.option(
    "--quantize",
    envvar="BRIDGE_QUANTIZE",
    type=click.Choice(["none", "fp8"]),
    default=default_of(ServiceOptions, "quantize"),
    show_default=True,
    help="fp8: FP8 linear layers (per-channel weight and per-token activation scales) on "
    "GPUs of compute capability 8.9+ (L4, L40S, H100, H200); refused elsewhere.",
)
@click.option(
    "--allow-truncation",
    envvar="BRIDGE_ALLOW_TRUNCATION",
    is_flag=True,
    help="Allow `dimensions` below the native size for models not trained for it.",
)
@click.option(
    "--allow-token-ids",
    envvar="BRIDGE_ALLOW_TOKEN_IDS",
    is_flag=True,
    help="Accept token-id inputs (the served model's own ids). Off by default: LangChain's "
    "OpenAIEmbeddings sends tiktoken ids unless check_embedding_ctx_length=False.",
)
@click.option(
    "--api-key",
    "api_keys",
    envvar=["BRIDGE_API_KEY", "BRIDGE_API_KEYS"],
    multiple=True,
    help="Accepted Bearer key; repeat, or comma-separate in BRIDGE_API_KEYS.",
)
@click.option(
    "--api-key-file",
    envvar="BRIDGE_API_KEY_FILE",
    default=None,
    type=click.Path(dir_okay=False),
    help="File of keys (one a line), re-read when it changes: rotate without restart.",
)
@click.option(
    "--served-model-name",
    envvar="BRIDGE_SERVED_MODEL_NAME",
    default=None,
    help="Model name reported to clients [default: the model's name].",
)
@click.option("--log-level", envvar="BRIDGE_LOG_LEVEL", default="info", show_default=True)
def serve(**opts) -> None:
    """Serve embeddings over an OpenAI-compatible HTTP API (and TEI's /embed)."""
    _check_port_free(opts["host"], opts["port"])  # before minutes of model loading

    import uvicorn

    from bridge.model.errors import BridgeError
    from bridge.model.service import EmbeddingService
    from bridge.server.app import create_app
    from bridge.server.auth import parse_keys
    from bridge.server.lifecycle import DrainingServer

    _setup_logging(opts["log_level"])
    options = ServiceOptions(
        model=opts["model"],
        revision=opts["revision"],
        device=opts["device"],
        dtype=opts["dtype"],
        max_batch_tokens=opts["max_batch_tokens"],
        max_input_tokens=opts["max_input_tokens"],
        max_queue_tokens=opts["max_queue_tokens"],
        queue_seconds=opts["queue_seconds"],
        allow_truncation=opts["allow_truncation"],
        allow_token_ids=opts["allow_token_ids"],
        compile=opts["compile_model"],
        cuda_graphs=opts["cuda_graphs"],
        fused_kernels=opts["fused_kernels"],
        quantize=opts["quantize"],
    )
    try:
        service = EmbeddingService.from_options(options)
    except BridgeError as exc:  # model not found, bad files, device or dtype unusable
        raise click.ClickException(f"cannot load model {options.model!r}: {exc}") from exc
    keys = [k for raw in opts["api_keys"] for k in parse_keys(raw)]
    settings = ServerSettings(
        api_keys=keys,
        api_key_file=opts["api_key_file"],
        max_inputs_per_request=opts["max_inputs"],
        max_request_bytes=opts["max_request_bytes"],
        served_model_name=opts["served_model_name"],
        shutdown_grace=opts["shutdown_grace"],
    )
    app = create_app(service, settings)
    profile = service.profile
    devices = ", ".join(str(e.device) for e in service.embedders)
    click.echo(
        f"serving {profile.name} ({profile.kind}, dim {profile.native_dim}) "
        f"on http://{opts['host']}:{opts['port']} with {devices}"
        + (" (API keys required)" if keys or opts["api_key_file"] else ""),
        err=True,
    )
    config = uvicorn.Config(
        app, host=opts["host"], port=opts["port"], log_level=opts["log_level"], access_log=False
    )
    DrainingServer(config, app.state.lifecycle, settings.shutdown_grace).run()


def _check_port_free(host: str, port: int) -> None:
    """Fail at once, with a usage error, when the address is taken or cannot be bound."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                why = "is already in use (another bridge serve?); pick another --port"
            else:
                why = f"cannot be bound ({exc.strerror}); check --host"
            raise click.UsageError(f"{host}:{port} {why}") from exc


main.add_command(engine)
main.add_command(plugin)
register_index_commands(main)


def _show_envvars(group: click.Group) -> None:
    """List each option's environment variable in --help, so help and behaviour agree."""
    for command in group.commands.values():
        if isinstance(command, click.Group):
            _show_envvars(command)
        for param in command.params:
            if isinstance(param, click.Option) and param.envvar:
                param.show_envvar = True


_show_envvars(main)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
