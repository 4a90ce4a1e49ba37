"""The ``bridge`` command line."""

from __future__ import annotations

import logging
import sys

import click

from bridge.engines.cli import engine
from bridge.index.cli import register as register_index_commands
from bridge.plugin.cli import plugin


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="embedding-bridge")
def main() -> None:
    """The embedding bridge: Qwen3-Embedding on your GPU, wired into Elasticsearch and OpenSearch.

    Every option can also be set as an environment variable named BRIDGE_<OPTION>
    (for example BRIDGE_MODEL, BRIDGE_PORT, BRIDGE_API_KEYS).
    """


@main.command()
@click.option(
    "--model",
    envvar="BRIDGE_MODEL",
    default="Qwen/Qwen3-Embedding-4B",
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
    default="auto",
    show_default=True,
    help="auto, cpu, cuda (every visible GPU, one worker each), cuda:N, or a list "
    "such as cuda:0,cuda:1.",
)
@click.option(
    "--dtype",
    envvar="BRIDGE_DTYPE",
    default="auto",
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
    "on CUDA, padded tokens otherwise [default: 32768 on CUDA, 1024 on CPU].",
)
@click.option(
    "--max-input-tokens",
    envvar="BRIDGE_MAX_INPUT_TOKENS",
    default=None,
    type=click.IntRange(min=2),
    help="Longest input in tokens [default: 8192, capped at the model's own limit].",
)
@click.option(
    "--max-queue-tokens",
    envvar="BRIDGE_MAX_QUEUE_TOKENS",
    default=None,
    type=click.IntRange(min=1),
    help="Tokens allowed to wait; beyond it requests get 429 [default: max(16 x batch, 262144)].",
)
@click.option(
    "--max-inputs",
    envvar="BRIDGE_MAX_INPUTS",
    default=2048,
    show_default=True,
    type=click.IntRange(min=1),
    help="Most inputs in one request (413 beyond).",
)
@click.option(
    "--max-request-bytes",
    envvar="BRIDGE_MAX_REQUEST_BYTES",
    default=16 * 1024 * 1024,
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
    default=True,
    show_default=True,
    help="On a GPU, capture CUDA graphs for batches of up to 2,048 tokens at start-up "
    "(short queries skip the Python kernel-launch overhead; Qwen3 models).",
)
@click.option(
    "--fused-kernels/--no-fused-kernels",
    envvar="BRIDGE_FUSED_KERNELS",
    default=True,
    show_default=True,
    help="On a GPU, run the elementwise steps of Qwen3's padding-free forward (add + "
    "RMSNorm, q/k norm + rotary, SiLU·mul) as fused Triton kernels.",
)
@click.option(
    "--allow-truncation",
    envvar="BRIDGE_ALLOW_TRUNCATION",
    is_flag=True,
    help="Allow `dimensions` below the native size for models not trained for it.",
)
@click.option(
    "--api-key",
    "api_keys",
    envvar="BRIDGE_API_KEYS",
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
    import uvicorn

    from bridge.model.service import EmbeddingService, ServiceOptions
    from bridge.server.app import ServerSettings, create_app
    from bridge.server.auth import parse_keys

    _setup_logging(opts["log_level"])
    options = ServiceOptions(
        model=opts["model"],
        revision=opts["revision"],
        device=opts["device"],
        dtype=opts["dtype"],
        max_batch_tokens=opts["max_batch_tokens"],
        max_input_tokens=opts["max_input_tokens"],
        max_queue_tokens=opts["max_queue_tokens"],
        allow_truncation=opts["allow_truncation"],
        compile=opts["compile_model"],
        cuda_graphs=opts["cuda_graphs"],
        fused_kernels=opts["fused_kernels"],
    )
    try:
        service = EmbeddingService.from_options(options)
    except (ValueError, RuntimeError, OSError) as exc:
        raise click.ClickException(f"cannot load model {options.model!r}: {exc}") from exc
    keys = [k for raw in opts["api_keys"] for k in parse_keys(raw)]
    settings = ServerSettings(
        api_keys=keys,
        api_key_file=opts["api_key_file"],
        max_inputs_per_request=opts["max_inputs"],
        max_request_bytes=opts["max_request_bytes"],
        served_model_name=opts["served_model_name"],
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
    uvicorn.run(
        app, host=opts["host"], port=opts["port"], log_level=opts["log_level"], access_log=False
    )


main.add_command(engine)
main.add_command(plugin)
register_index_commands(main)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
