"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from bridge.model.passages import DEFAULT_PASSAGE_TOKENS

TokenIds = list[StrictInt]
EmbeddingInput = StrictStr | list[StrictStr] | TokenIds | list[TokenIds]


class PassageOptions(BaseModel):
    """Split each input into passages of at most ``max_tokens`` model tokens."""

    model_config = ConfigDict(extra="forbid")

    max_tokens: StrictInt = Field(
        default=DEFAULT_PASSAGE_TOKENS, description="Body tokens per passage (at most)."
    )
    overlap: StrictInt | None = Field(
        default=None,
        description="Tokens shared by consecutive passages (default: half of max_tokens).",
    )


class EmbeddingRequest(BaseModel):
    """OpenAI ``/v1/embeddings`` body, with the bridge's extensions."""

    model_config = ConfigDict(extra="ignore")

    input: EmbeddingInput = Field(description="A string, a list of strings, or token-id lists.")
    model: str | None = Field(default=None, description="Accepted; the served model answers.")
    dimensions: StrictInt | None = Field(
        default=None, description="Output size (MRL truncation then L2 normalisation)."
    )
    encoding_format: Literal["float", "base64"] = "float"
    input_type: Literal["query", "document"] = Field(
        default="document", description="Queries get the model's instruction; documents do not."
    )
    instruction: str | None = Field(
        default=None, description="Task description for queries (overrides the default)."
    )
    truncate: bool = Field(
        default=True, description="Cut inputs over the token limit instead of failing with 400."
    )
    titles: list[StrictStr | None] | None = Field(
        default=None,
        description="One title per input (null for none): each document is embedded as "
        "title, newline, text.",
    )
    passages: PassageOptions | None = Field(
        default=None,
        description="Split each document into passages; `data[i].passages` holds one "
        "vector per passage with its offsets in the input.",
    )
    user: str | None = None


class EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str = Field(
        description="Floats, or base64 of little-endian float32 with encoding_format=base64."
    )


class PassageData(BaseModel):
    start: int = Field(description="Offset of the passage's first character in the input.")
    end: int = Field(description="Offset after its last character (code points).")
    embedding: list[float] | str


class PassagesData(BaseModel):
    object: Literal["passages"] = "passages"
    index: int
    passages: list[PassageData]


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingData] | list[PassagesData]
    model: str
    usage: Usage


class TEIEmbedRequest(BaseModel):
    """Text-embeddings-inference ``/embed`` body."""

    model_config = ConfigDict(extra="ignore")

    inputs: StrictStr | list[StrictStr]
    normalize: bool = True
    truncate: bool = True
    dimensions: StrictInt | None = None
    input_type: Literal["query", "document"] = "document"
    instruction: str | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    owned_by: str = "embedding-bridge"
    native_dimension: int
    dimensions: dict[str, int]
    max_input_tokens: int
    pooling: str
    normalized: bool


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Health(BaseModel):
    status: Literal["ok", "worker_dead"]


class Readiness(BaseModel):
    ready: bool
    model: str
