"""Local OpenSearch and Elasticsearch nodes: JVM distributions from Maven Central, on loopback."""
