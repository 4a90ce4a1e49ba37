/* Elasticsearch 8.x entry point: Processor.Factory.create has no ProjectId yet. */
package org.bridge.elasticsearch;

import org.elasticsearch.cluster.metadata.IndexNameExpressionResolver;
import org.elasticsearch.cluster.node.DiscoveryNodes;
import org.elasticsearch.common.io.stream.NamedWriteableRegistry;
import org.elasticsearch.common.settings.ClusterSettings;
import org.elasticsearch.common.settings.IndexScopedSettings;
import org.elasticsearch.common.settings.Settings;
import org.elasticsearch.common.settings.SettingsFilter;
import org.elasticsearch.features.NodeFeature;
import org.elasticsearch.ingest.Processor;
import org.elasticsearch.rest.RestController;
import org.elasticsearch.rest.RestHandler;

import java.util.Collection;
import java.util.Map;
import java.util.function.Predicate;
import java.util.function.Supplier;

public final class BridgePlugin extends BridgePluginBase {
    @Override
    public Collection<RestHandler> getRestHandlers(
        Settings settings, NamedWriteableRegistry registry, RestController controller, ClusterSettings clusterSettings,
        IndexScopedSettings indexScopedSettings, SettingsFilter settingsFilter, IndexNameExpressionResolver resolver,
        Supplier<DiscoveryNodes> nodes, Predicate<NodeFeature> features
    ) {
        return rootHandler(settings);
    }

    @Override
    public Map<String, Processor.Factory> getProcessors(Processor.Parameters parameters) {
        EmbeddingBatcher.Scheduler scheduler = scheduler(parameters);
        Processor.Factory factory = (Map<String, Processor.Factory> factories, String tag, String description,
            Map<String, Object> config) -> EmbeddingProcessor.create(tag, description, config, scheduler);
        return Map.of(EmbeddingProcessor.TYPE, factory);
    }
}
