"""What makes up each local engine: Maven coordinates, plugins, Java range, settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from bridge.nodes.maven import Artifact

OPENSEARCH_VERSION = "3.6.0"  # newest with k-NN, ml-commons, neural-search on Central
ELASTICSEARCH_VERSION = "9.5.4"  # newest 9.x integ-test-zip on Central
ELASTICSEARCH_8_VERSION = "8.19.21"  # newest 8.x integ-test-zip on Central

DEFAULT_PORTS = {"opensearch": 9200, "elasticsearch": 9210}


class UnknownEngine(ValueError):
    pass


@dataclass(frozen=True)
class Distribution:
    """One engine at one version, ready to be fetched and configured."""

    engine: str
    version: str
    core: Artifact
    plugins: tuple[Artifact, ...] = field(default_factory=tuple)
    java_min: int = 21
    java_max: int | None = None
    java_home_var: str = "OPENSEARCH_JAVA_HOME"
    java_opts_var: str = "OPENSEARCH_JAVA_OPTS"
    conf_var: str = "OPENSEARCH_PATH_CONF"
    launcher: str = "opensearch"
    plugin_tool: str = "opensearch-plugin"
    config_file: str = "opensearch.yml"
    initial_managers_key: str = "cluster.initial_cluster_manager_nodes"
    engine_settings: dict[str, object] = field(default_factory=dict)  # added to settings()

    @property
    def home_name(self) -> str:
        return f"{self.engine}-{self.version}"

    def settings(self) -> dict[str, object]:
        """Settings for a local, loopback-only development node."""
        common: dict[str, object] = {
            "network.host": "127.0.0.1",
            "cluster.routing.allocation.disk.threshold_enabled": False,
            "action.destructive_requires_name": False,
        }
        return {**common, **self.engine_settings}


def opensearch(version: str = OPENSEARCH_VERSION) -> Distribution:
    major, minor = (int(p) for p in version.split(".")[:2])
    if (major, minor) < (2, 15):
        raise UnknownEngine(
            f"OpenSearch {version} is too old: ml-commons reaches a loopback endpoint "
            "only from 2.15 on"
        )
    plugin_version = f"{version}.0"
    plugins = tuple(
        Artifact("org.opensearch.plugin", name, plugin_version)
        for name in (
            "opensearch-job-scheduler",
            "opensearch-knn",
            "opensearch-ml-plugin",
            "neural-search",
        )
    )
    return Distribution(
        engine="opensearch",
        version=version,
        core=Artifact("org.opensearch.distribution.integ-test-zip", "opensearch", version),
        plugins=plugins,
        java_min=21 if major >= 3 else 11,
        java_max=None if major >= 3 else 21,
        engine_settings={
            # A local node must run ML tasks itself (there are no ML nodes).
            "plugins.ml_commons.only_run_on_ml_node": False,
            "plugins.ml_commons.native_memory_threshold": 100,
        },
    )


def elasticsearch(version: str = ELASTICSEARCH_VERSION) -> Distribution:
    major = int(version.split(".")[0])
    if major < 8:
        raise UnknownEngine(f"Elasticsearch {version} is too old: 8.x or 9.x is supported")
    return Distribution(
        engine="elasticsearch",
        version=version,
        core=Artifact("org.elasticsearch.distribution.integ-test-zip", "elasticsearch", version),
        java_min=21 if major >= 9 else 17,
        java_max=None if major >= 9 else 24,
        java_home_var="ES_JAVA_HOME",
        java_opts_var="ES_JAVA_OPTS",
        conf_var="ES_PATH_CONF",
        launcher="elasticsearch",
        plugin_tool="elasticsearch-plugin",
        config_file="elasticsearch.yml",
        engine_settings={"xpack.security.enabled": False},
        initial_managers_key="cluster.initial_master_nodes",
    )


def distribution(engine: str, version: str | None = None) -> Distribution:
    factory = {"opensearch": opensearch, "elasticsearch": elasticsearch}.get(engine)
    if factory is None:
        raise UnknownEngine(f"unknown engine {engine!r}: use opensearch or elasticsearch")
    return factory(version) if version else factory()
